"""CT: DICOM import, the paper's preprocessing into a volume cache, and window datasets."""
