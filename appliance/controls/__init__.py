"""The call button (gpiozero): the one control a blind user needs.

:mod:`appliance.controls.button` holds what a press means; gpiozero supplies the pin, on the Pi
through lgpio and in tests through its mock pin factory.
"""


class ControlError(Exception):
    """The button cannot be used; the message says what to check."""
