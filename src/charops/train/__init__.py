"""charops.train"""
