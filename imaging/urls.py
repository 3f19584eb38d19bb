from django.urls import path

from . import views

urlpatterns = [
    path("<int:pk>/", views.image_file, name="image-file"),
]
