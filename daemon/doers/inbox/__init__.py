"""The inbox watcher: files landing in a directory become arrivals.

- ``watcher``: the loop that tracks files and carries out the decisions of
  ``calstream.daemon.deciders.inbox_file`` (settle, structure, identity);
- ``tracked_file``: one look at a tracked file, and its decision carried out;
- ``observer_bridge``: watchdog events and inbox listings, handed to the loop;
- ``..file_reads`` (doers/file_reads.py, shared with the ledgers and the
  snapshot): stat, FITS layout, identity and digest of a file, off the loop;
- ``ledger``: what has been announced (sqlite), also a digest cache;
- ``announcer``: dedupe, then announce through the caller's ``on_arrival``;
- ``quarantine``: bad files moved aside and reported through ``on_reject``;
- ``reports``: what the watcher hands its caller, and its log fields.
"""

from calstream.daemon.doers.inbox.reports import Arrival, Rejection, WatcherStats
from calstream.daemon.doers.inbox.watcher import Watcher

__all__ = ["Arrival", "Rejection", "Watcher", "WatcherStats"]
