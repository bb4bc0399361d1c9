"""SLO-driven serving plans: the serving scheduler replayed on weightless graph costs (``cost_runner``,
``replay``), candidate deployments and fit pruning (``candidates``), goodput search (``search``), metrics,
plots and the ``optimum-npu plan-serving`` report (``plan_serving``, ``report``, ``plots``, ``commands``)."""
