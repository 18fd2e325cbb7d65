"""Draws the scene: state band on top, remote video in the middle, the expression very large below.
A part that is not working (the speaker, the camera, the memory card) is named in a band of its own
under the state band, for a helper who comes by later: the owner heard it once, or, with the speaker
broken, not at all.

Colours are white and yellow on black (contrast ratios of 21:1 and 19.6:1), and every text is as
large as its band allows: the expression's word fills the bottom third of the screen. A long text
(a caller's long name, a lockout) is wrapped rather than shrunk below half its band's height; the
state's lines may go on over the space below the band while nothing is drawn there, the faults'
band then under them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pygame

from appliance.display.fonts import Fonts

BLACK = (0, 0, 0)
WHITE = (255, 255, 255)
YELLOW = (255, 255, 0)
GREY = (170, 170, 170)
TOP = 0.16  # share of the height for the state band
FAULTS = 0.14  # share of the height for the band naming parts that do not work, when there are any
BOTTOM = 0.34  # share of the height for the expression
MARGIN = 0.03


@dataclass(frozen=True)
class Scene:
    unit_name: str = "emocall"
    state: str = ""  # the call state as a sentence
    big: str = ""  # the expression's word, or a pairing code
    big_colour: tuple[int, int, int] = YELLOW
    frame: np.ndarray | None = None  # the remote video, BGR
    faults: str = ""  # what does not work, as sentences ("The speaker is not working.")


def _text(
    surface: pygame.Surface,
    fonts: Fonts,
    text: str,
    box: pygame.Rect,
    colour: tuple[int, int, int],
    *,
    room: pygame.Rect | None = None,
) -> int:
    """``text`` centred in ``box``, as large as one line there allows. A text whose font would be
    under half the box's height on one line is wrapped; its lines may go on down into ``room``
    (``box`` and the empty space below it), from the top of ``box``. Returns the height it took."""
    if not text:
        return 0
    room = room or box
    rendered = fonts.render(
        text, box.width, room.height, colour, line_height=box.height, readable=box.height // 2
    )
    if rendered.get_height() <= box.height:
        surface.blit(rendered, rendered.get_rect(center=box.center))
        return box.height
    surface.blit(rendered, rendered.get_rect(centerx=box.centerx, top=room.top))
    return rendered.get_height()


def _video(surface: pygame.Surface, frame: np.ndarray, box: pygame.Rect) -> None:
    h, w = frame.shape[:2]
    scale = min(box.width / w, box.height / h)
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    rgb = cv2.cvtColor(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    picture = pygame.image.frombuffer(rgb.tobytes(), size, "RGB")
    surface.blit(picture, picture.get_rect(center=box.center))


def draw(scene: Scene, size: tuple[int, int], fonts: Fonts) -> pygame.Surface:
    width, height = size
    surface = pygame.Surface(size)
    surface.fill(BLACK)
    margin = int(width * MARGIN)
    top_h, bottom_h = int(height * TOP), int(height * BOTTOM)
    name_w = width // 4
    state_box = pygame.Rect(margin, 0, width - name_w - 2 * margin, top_h)
    faults_band = int(height * FAULTS)
    # A long state line (a caller's long name, a lockout) goes on below the band where nothing is
    # drawn: over the video area when there is no video, above the faults' band if there is one
    # (it moves down under the line: a ring line was squeezed into the top band, small), and over
    # the bottom third when that is empty too.
    if scene.frame is not None:
        free_to = top_h
    elif scene.faults:
        free_to = height - bottom_h - faults_band
    else:
        free_to = height - (bottom_h if scene.big else margin)
    room = pygame.Rect(margin, 0, state_box.width, free_to)
    state_h = _text(surface, fonts, scene.state, state_box, WHITE, room=room)
    _text(surface, fonts, scene.unit_name, pygame.Rect(width - name_w, 0, name_w - margin, top_h), GREY)
    # The faults' lines may go on over the video area while there is no video.
    faults_top = max(top_h, state_h)
    faults_box = pygame.Rect(margin, faults_top, width - 2 * margin, faults_band)
    below = pygame.Rect(margin, faults_top, faults_box.width, height - faults_top - bottom_h)
    faults_room = faults_box if scene.frame is not None else faults_box.union(below)
    faults_h = _text(surface, fonts, scene.faults, faults_box, YELLOW, room=faults_room)
    video_box = pygame.Rect(0, faults_top + faults_h, width, height - faults_top - faults_h - bottom_h)
    if scene.frame is not None:
        _video(surface, scene.frame, video_box)
    big_box = pygame.Rect(margin, height - bottom_h, width - 2 * margin, bottom_h)
    _text(surface, fonts, scene.big, big_box, scene.big_colour)
    return surface
