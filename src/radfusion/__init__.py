"""radfusion: pulmonary-embolism detection from CT and EHR, and its fairness benchmark."""

__version__ = "0.1.0"
