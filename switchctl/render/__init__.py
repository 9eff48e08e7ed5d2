"""Rendering switch configuration from a site (jinja2, strict) and deploying it.

FreeSWITCH XML is autoescaped; Asterisk INI has no escaping, so every value is checked instead.
"""

from switchctl.render.freeswitch import RenderError, render_freeswitch, render_to, templates_dir, write_tree
from switchctl.render.site import pick_any_switch, render_site

__all__ = ["RenderError", "pick_any_switch", "render_freeswitch", "render_site", "render_to", "templates_dir",
           "write_tree"]
