"""The event-driven runtime: wires topics/ and steps/."""
