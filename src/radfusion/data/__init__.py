"""Cohorts: the RadFusion release layout, its loader and validator, and a synthetic generator."""
