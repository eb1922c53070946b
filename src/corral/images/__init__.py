"""Guest images corral builds itself (the tiny test guest: :mod:`corral.images.tiny`)."""
