"""A matplotlib plot for a dock widget: napari's theme, and matplotlib's navigation toolbar.

:class:`PlotPanel` holds the figure, its Qt canvas and a ``NavigationToolbar2QT`` (pan,
zoom, home, save as PNG/SVG/PDF).  The owner draws into :attr:`PlotPanel.figure` as
usual and calls :meth:`PlotPanel.style` after drawing: the figure, axes, ticks, labels,
titles and legends then take the colours of napari's current theme (dark, light or a
custom one, from :func:`napari.utils.theme.get_theme`), and take the new ones when the
user switches theme.  Lines the owner colours with :attr:`PlotPanel.ink` (the theme's
text colour) are recoloured too.

Artists that move often (a marker following a slider) are an *overlay*
(:meth:`PlotPanel.set_overlay`): they are drawn over a cached image of the rest of the
figure and blitted (:meth:`PlotPanel.update_overlay`), in a few milliseconds, where a
full redraw with constrained layout takes a tenth of a second or more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg, NavigationToolbar2QT
from matplotlib.figure import Figure
from napari.utils.theme import get_theme
from qtpy.QtGui import QColor, QPalette
from qtpy.QtWidgets import QVBoxLayout, QWidget

if TYPE_CHECKING:
    import napari

__all__ = ["PlotPanel", "theme_colours"]


def theme_colours(name: str) -> dict[str, str]:
    """The plot colours of napari theme ``name`` (``"system"`` resolves as napari does).

    Returns
    -------
    dict
        ``background`` (figure and axes), ``ink`` (text, ticks, spines, and lines drawn
        in the text colour), ``grid``, ``frame`` (legend edges), as hex strings.
    """
    try:
        theme = get_theme(name)
    except (KeyError, ValueError):
        theme = get_theme("dark")
    return {
        "background": theme.background.as_hex(),
        "ink": theme.text.as_hex(),
        "grid": theme.highlight.as_hex(),
        "frame": theme.primary.as_hex(),
    }


class PlotPanel(QWidget):
    """A figure with its canvas and navigation toolbar, in napari's theme.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Whose theme the plot follows.
    parent : QWidget, optional
    figsize : (float, float)
        The figure's size in inches (the canvas then follows the dock's size).
    min_height : int
        The canvas's minimum height in pixels.
    on_theme : callable, optional
        Called after a theme change restyled the plot (an owner that colours artists
        from the theme beyond :attr:`ink` redraws there).

    Attributes
    ----------
    figure : matplotlib.figure.Figure
    canvas : FigureCanvasQTAgg
    toolbar : NavigationToolbar2QT
    colours : dict
        The current theme's :func:`theme_colours`.
    """

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        parent: QWidget | None = None,
        *,
        figsize: tuple[float, float] = (6, 3.2),
        min_height: int = 260,
        on_theme: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._on_theme_done = on_theme
        self.colours = theme_colours(viewer.theme)
        self._ink = self.colours["ink"]
        self.figure = Figure(figsize=figsize, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setParent(self)
        self.canvas.setMinimumHeight(min_height)
        self.toolbar = NavigationToolbar2QT(self.canvas, self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.canvas, stretch=1)
        self._apply_palette()
        self._overlay: list[Any] = []
        self._background: Any = None
        self.canvas.mpl_connect("draw_event", self._on_draw)
        viewer.events.theme.connect(self._on_theme)
        self.destroyed.connect(lambda *_: _disconnect(viewer.events.theme, self._on_theme))

    @property
    def ink(self) -> str:
        """The theme's text colour: for lines that should read as "the foreground"."""
        return self.colours["ink"]

    @property
    def theme(self) -> str:
        """The napari theme the plot is styled for."""
        return self.viewer.theme

    def style(self) -> None:
        """Colour the figure's artists for the current theme (call after drawing)."""
        c = self.colours
        old_ink = self._ink
        self.figure.set_facecolor(c["background"])
        for text in self.figure.texts:
            text.set_color(c["ink"])
        suptitle = getattr(self.figure, "_suptitle", None)  # matplotlib keeps no other handle
        if suptitle is not None:
            suptitle.set_color(c["ink"])
        for ax in self.figure.axes:
            ax.set_facecolor(c["background"])
            for spine in ax.spines.values():
                spine.set_edgecolor(c["ink"])
            ax.tick_params(which="both", colors=c["ink"], labelcolor=c["ink"])
            for label in (ax.xaxis.label, ax.yaxis.label, ax.title):
                label.set_color(c["ink"])
            for gridline in ax.get_xgridlines() + ax.get_ygridlines():
                gridline.set_color(c["grid"])
            for line in ax.get_lines():
                if _same_colour(line.get_color(), old_ink):
                    line.set_color(c["ink"])
            for text in ax.texts:
                if _same_colour(text.get_color(), old_ink):
                    text.set_color(c["ink"])
            legend = ax.get_legend()
            if legend is not None:
                legend.get_frame().set_facecolor(c["background"])
                legend.get_frame().set_edgecolor(c["frame"])
                for text in legend.get_texts():
                    text.set_color(c["ink"])
                for handle in legend.legend_handles:
                    if handle is not None and _same_colour(_colour_of(handle), old_ink):
                        handle.set_color(c["ink"])
        self._ink = c["ink"]

    def set_overlay(self, artists: list[Any]) -> None:
        """Draw ``artists`` as the overlay (from the next full draw; [] for none)."""
        self._overlay = list(artists)
        for artist in self._overlay:
            artist.set_animated(True)

    def update_overlay(self) -> None:
        """Show the overlay's artists as they are now, over the cached figure."""
        if self._background is None:
            self.canvas.draw_idle()
            return
        self.canvas.restore_region(self._background)
        self._draw_overlay()
        self.canvas.blit(self.figure.bbox)

    def _draw_overlay(self) -> None:
        for artist in self._overlay:
            if artist.figure is self.figure and artist.get_visible():
                self.figure.draw_artist(artist)

    def _on_draw(self, event: Any = None) -> None:
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        self._draw_overlay()

    def _on_theme(self, event: Any = None) -> None:
        self.colours = theme_colours(self.viewer.theme)
        self._apply_palette()
        self.style()
        self.canvas.draw_idle()
        if self._on_theme_done is not None:
            self._on_theme_done()

    def _apply_palette(self) -> None:
        # The toolbar's icons are drawn light on a dark palette (matplotlib's icon engine
        # looks at the toolbar's background when it paints them).
        palette = QPalette(self.palette())
        bg, ink = QColor(self.colours["background"]), QColor(self.colours["ink"])
        for role, colour in (
            (QPalette.ColorRole.Window, bg),
            (QPalette.ColorRole.Button, bg),
            (QPalette.ColorRole.WindowText, ink),
            (QPalette.ColorRole.ButtonText, ink),
        ):
            palette.setColor(role, colour)
        self.setPalette(palette)
        self.toolbar.setPalette(palette)
        self.toolbar.update()


def _colour_of(artist: Any) -> Any:
    for getter in ("get_color", "get_facecolor"):
        if hasattr(artist, getter):
            return getattr(artist, getter)()
    return None


def _same_colour(a: Any, b: Any) -> bool:
    from matplotlib.colors import same_color

    try:
        return a is not None and b is not None and bool(same_color(a, b))
    except ValueError:
        return False


def _disconnect(emitter: Any, callback: Callable[..., Any]) -> None:
    try:
        emitter.disconnect(callback)
    except (RuntimeError, ValueError, TypeError):
        pass
