"""Dispatch's hello function: `handle(context, payload)` returns the payload of the execution.

What it prints shows up in the execution's `context.logs.stdout`.
"""


def handle(ctx, payload):
    name = "Noone"
    place = "Nowhere"
    if payload:
        name = payload.get("name", name)
        place = payload.get("place", place)
    print("messages to stdout show up in logs")
    return {"myField": f"Hello, {name} from {place}"}
