"""The reviewer dashboard: static HTML pages rendered from Jinja2 templates (``templates/``).

``results/report/index.html`` is the overview (verdict per paper, the comparison figure and table,
the workload, stage times, machine, versions, config); ``<method>.html`` renders each method's
``section.json``. See docs/dashboard.md.
"""

from repshare.report.render import Page, Problem, render_dashboard

__all__ = ["Page", "Problem", "render_dashboard"]
