"""Association evidence: which accounts are seen from each device and IP address.

Orders carry a device id in their metadata and come from an IP address; the
gateway records, off the hot path, which accounts each was seen with, and
raises a ``SUSPECTED_ASSOCIATION`` audit event when more accounts than the
policy allows share one within its window. It restricts nobody by itself: ops
review the suspects (``ListSuspectedAssociations``) and link them into a group.
See ``docs/groups.md``.
"""

from gateway.association.audit import add_audit_sink, emit_suspected_association
from gateway.association.evidence import DEVICE_METADATA_KEY, Evidence, read_evidence
from gateway.association.policy import AssociationPolicy
from gateway.association.recorder import EvidenceRecorder

__all__ = [
    "DEVICE_METADATA_KEY",
    "AssociationPolicy",
    "Evidence",
    "EvidenceRecorder",
    "add_audit_sink",
    "emit_suspected_association",
    "read_evidence",
]
