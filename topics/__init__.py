"""The topic catalog and message contract. Imports neither daemon nor steps."""
