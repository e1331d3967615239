"""MLLMRec-R1 pipeline library: stages under `stages/` are thin Typer wrappers around these modules."""
