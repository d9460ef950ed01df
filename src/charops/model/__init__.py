"""charops.model"""
