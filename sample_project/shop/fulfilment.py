"""Fulfilment: parallel branches, a join, a run-time route choice and retries.

                 +--> PickItems --> InspectItems --> WrapItems --+
                 |                                               |
    ReserveStock +--> PrintLabel (retried when it fails) --------+--> Pack --+--> ExpressShip  --> Done
                 |                                               |           |
                 +--> NotifyWarehouse --> BookDockSlot ----------+           +--> StandardShip --> Done

ReserveStock fans out to three branches of different lengths; Pack runs once,
after all three have finished (fan-in). After packing, ``choose_carrier``
picks ExpressShip or StandardShip from the start context (Dynamic routing).

PrintLabel is flaky: with ``"flaky": true`` in the start context the label
printer jams once, the step fails and is retried after its backoff delay (the
instance is ``waiting`` meanwhile; ``heph tick`` or ``heph worker`` runs the
next attempt when it is due). ``"flaky": 3`` jams three times, more than its
three attempts: the instance fails, and ``heph retry`` runs the step again.

    heph start fulfilment ship1 --context contexts/fulfilment.json   # -> waiting (retry due in 1s)
    sleep 1 && heph tick                                             # -> completed, via express_ship
"""

from heph import Done, Dynamic, Error, Retry, Step, Unique, Workflow


def attempts_failed(instance, step_key):
    """How many times the step ``step_key`` has failed so far in this run."""
    return sum(1 for entry in instance.history if entry.step == step_key and entry.outcome == "failed")


class ReserveStock(Step):
    """Reserve every item of the shipment."""

    events = ["reserved"]

    def execute(self, instance, config, context):
        return "reserved", {"items": list(context.initial.get("items", []))}


class PickItems(Step):
    """Collect the items from the shelves."""

    events = ["picked"]

    def execute(self, instance, config, context):
        return "picked", {"picked": len(context.steps["reserve_stock"]["items"])}


class InspectItems(Step):
    """Check the picked items for damage."""

    events = ["passed"]

    def execute(self, instance, config, context):
        return "passed"


class WrapItems(Step):
    """Wrap the items for the journey."""

    events = ["wrapped"]

    def execute(self, instance, config, context):
        return "wrapped"


class PrintLabel(Step):
    """Print the shipping label; the printer jams when the context says ``flaky``."""

    events = ["printed"]
    retry = Retry(max_attempts=3, backoff="exponential", base_delay=1, max_delay=10)

    def execute(self, instance, config, context):
        jams = int(context.initial.get("flaky", 0))  # true jams once; a number jams that many times
        if attempts_failed(instance, self.key) < jams:
            return Error("label printer jammed")
        return "printed", {"label": f"LBL-{instance.id.split('::')[1].upper()}"}


class NotifyWarehouse(Step):
    """Warn the loading bay that a parcel is coming."""

    events = ["notified"]

    def execute(self, instance, config, context):
        return "notified"


class BookDockSlot(Step):
    """Book a loading-dock slot for the parcel."""

    events = ["booked"]

    def execute(self, instance, config, context):
        return "booked", {"dock": 3}


class Pack(Step):
    """Put items and label together, once every branch is done (the join)."""

    events = ["packed"]

    def execute(self, instance, config, context):
        steps = context.steps
        return "packed", {"label": steps["print_label"]["label"], "dock": steps["book_dock_slot"]["dock"]}


class ExpressShip(Step):
    """Ship with the next-day carrier."""

    events = ["shipped"]

    def execute(self, instance, config, context):
        return "shipped", {"carrier": "express", "days": 1}


class StandardShip(Step):
    """Ship with the regular carrier."""

    events = ["shipped"]

    def execute(self, instance, config, context):
        return "shipped", {"carrier": "standard", "days": 3}


def choose_carrier(context):
    """High-priority shipments go express; everything else goes standard."""
    return ExpressShip if context.initial.get("priority") == "high" else StandardShip


class Fulfilment(Workflow):
    """Reserve, prepare in parallel, pack, and ship with the right carrier."""

    name = "fulfilment"
    unique = Unique("shipment")
    tags = ["warehouse"]
    metadata = {"team": "logistics"}
    start = ReserveStock
    transitions = {
        ReserveStock: {"reserved": [PickItems, PrintLabel, NotifyWarehouse]},  # fan-out
        PickItems: {"picked": InspectItems},
        InspectItems: {"passed": WrapItems},
        WrapItems: {"wrapped": Pack},
        PrintLabel: {"printed": Pack},
        NotifyWarehouse: {"notified": BookDockSlot},
        BookDockSlot: {"booked": Pack},  # Pack has three predecessors: it waits for all of them
        Pack: {"packed": Dynamic(choose_carrier, targets=[ExpressShip, StandardShip])},
        ExpressShip: {"shipped": Done},
        StandardShip: {"shipped": Done},
    }
