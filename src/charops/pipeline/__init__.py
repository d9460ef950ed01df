"""charops.pipeline"""
