"""Words: what the unit says and shows for each event, per language.

Speech (``appliance.speech``) and the display (``appliance.display``) are two outputs of the same
words; both depend on this part and on nothing of each other.

- :mod:`appliance.words.phrases`: sentence templates per language, the words for each emotion
  label of the model card, which phrase a call state takes, and the phrases for the owner's settings.
"""


class WordsError(Exception):
    """A language has no phrases; the message names the ones there are."""
