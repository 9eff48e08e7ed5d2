"""Rendering switch configuration from a site (jinja2, autoescaped, strict) and deploying it."""

from switchctl.render.freeswitch import RenderError, render_freeswitch, render_to, templates_dir

__all__ = ["RenderError", "render_freeswitch", "render_to", "templates_dir"]
