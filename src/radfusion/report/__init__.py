"""The report: the paper's Tables 3-12 (Markdown, CSV, LaTeX), figures, and one HTML page."""
