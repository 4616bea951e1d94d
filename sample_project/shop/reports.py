"""DailyReport: a workflow started on a schedule (SPEC §10), once per slot.

    CollectFigures --collected--> SendReport --sent--> Done

``heph tick`` (from cron, say every minute) or ``heph worker`` starts one instance for each
weekday at 09:00 UTC: business value ``daily`` plus the slot (``report::daily202612070900``),
exactly once per slot however many processes tick. ``heph schedules`` shows the last slot
started and the next one.
"""

from heph import Done, Schedule, Step, Unique, Workflow


class CollectFigures(Step):
    """Gather yesterday's figures (here: what the schedule's context says to report)."""

    events = ["collected"]

    def execute(self, instance, config, context):
        return "collected", {"kind": context.initial.get("kind", "daily"), "orders": 42}


class SendReport(Step):
    """Mail the report."""

    events = ["sent"]

    def execute(self, instance, config, context):
        figures = context.steps["collect_figures"]
        return "sent", {"subject": f"{figures['kind']} report: {figures['orders']} orders"}


class DailyReport(Workflow):
    unique = Unique("report")
    start = CollectFigures
    transitions = {CollectFigures: {"collected": SendReport}, SendReport: {"sent": Done}}
    schedules = [Schedule(cron="0 9 * * mon-fri", value="daily{slot}", context={"kind": "daily"},
                          catchup="latest")]
