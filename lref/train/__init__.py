"""The LREF training stages, in pipeline order: selection -> SFT -> Multi-CoT -> DPO."""
