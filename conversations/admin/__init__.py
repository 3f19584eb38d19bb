"""Staff review in the Django admin: transcripts (read-only and audited), flags and the
review queue, usage and quotas, exports.

Reading what users wrote needs the `conversations.review_dialogue` permission on top
of the model permissions: without it a staff member sees dialogue metadata (owner,
title, counts) but no message text, anywhere. List pages annotate their counts with
correlated subqueries, so a page costs the same few queries however large the tables.
"""

from . import dialogues, messages, review, shares, usage  # noqa: F401 - each module registers its admins
