"""The study as a graph of stages (see `rsearch.study.stage`)."""
from rsearch.study.stage import Stage, StudyContext, load_stage, register_stage, study_stages

__all__ = ["Stage", "StudyContext", "load_stage", "register_stage", "study_stages"]
