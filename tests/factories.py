import factory
from django.contrib.auth import get_user_model

from conversations.models import Dialogue, Message


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall(
        "set_password", "correct-horse-battery-42"
    )

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class DialogueFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dialogue

    owner = factory.SubFactory(UserFactory)
    title = factory.Sequence(lambda n: f"Dialogue {n}")


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    dialogue = factory.SubFactory(DialogueFactory)
    user = factory.LazyAttribute(lambda m: m.dialogue.owner)
    role = Message.Role.USER
    content = factory.Sequence(lambda n: f"message {n}")
    status = Message.Status.COMPLETE
