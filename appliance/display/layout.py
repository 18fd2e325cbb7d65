"""Draws the scene: state band on top, remote video in the middle, the expression very large below.

Colours are white and yellow on black (contrast ratios of 21:1 and 19.6:1), and every text is as
large as its band allows: the expression's word fills the bottom third of the screen.
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
BOTTOM = 0.34  # share of the height for the expression
MARGIN = 0.03


@dataclass(frozen=True)
class Scene:
    unit_name: str = "emocall"
    state: str = ""  # the call state as a sentence
    big: str = ""  # the expression's word, or a pairing code
    big_colour: tuple[int, int, int] = YELLOW
    frame: np.ndarray | None = None  # the remote video, BGR


def _text(
    surface: pygame.Surface, fonts: Fonts, text: str, box: pygame.Rect, colour: tuple[int, int, int]
) -> None:
    if not text:
        return
    rendered = fonts.render(text, box.width, box.height, colour)
    surface.blit(rendered, rendered.get_rect(center=box.center))


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
    _text(surface, fonts, scene.state, pygame.Rect(margin, 0, width - name_w - 2 * margin, top_h), WHITE)
    _text(surface, fonts, scene.unit_name, pygame.Rect(width - name_w, 0, name_w - margin, top_h), GREY)
    video_box = pygame.Rect(0, top_h, width, height - top_h - bottom_h)
    if scene.frame is not None:
        _video(surface, scene.frame, video_box)
    big_box = pygame.Rect(margin, height - bottom_h, width - 2 * margin, bottom_h)
    _text(surface, fonts, scene.big, big_box, scene.big_colour)
    return surface
