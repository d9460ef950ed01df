"""charops.storage"""
