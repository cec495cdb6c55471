"""Reference logits and fidelity metrics (issue: reference logits and fidelity metrics)."""
