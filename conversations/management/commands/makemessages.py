"""Django's `makemessages`, also reading the plural helper of static/js/i18n.js.

`ngettextFmt(singular, plural, count, values)` is how the page's scripts write
plurals; without this keyword xgettext misses those strings and every run would mark
their translations obsolete.
"""

from django.core.management.commands import makemessages


class Command(makemessages.Command):
    xgettext_options = [
        *makemessages.Command.xgettext_options,
        "--keyword=ngettextFmt:1,2",
    ]
