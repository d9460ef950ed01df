"""The artifact store: datasets, models, registry and reports in a local directory or any S3.

    from charops.storage import open_store
    store = open_store()                     # CHAROPS_STORE, config file, cluster or ./.charops/store
    store.put_dir("out/sft", "models/sft/run1")
    charops store ls models/                 # the same from the command line
"""

from charops.storage.config import (
    KFP_BUCKET,
    KFP_ENDPOINT,
    KFP_SECRET_ENV,
    KFP_SECRET_NAME,
    open_store,
)
from charops.storage.local import LocalStore
from charops.storage.s3 import S3Store
from charops.storage.store import MARKER, ObjectInfo, StorageError, Store, Transfer, read_manifest

__all__ = ["KFP_BUCKET", "KFP_ENDPOINT", "KFP_SECRET_ENV", "KFP_SECRET_NAME", "MARKER",
           "LocalStore", "ObjectInfo", "S3Store", "StorageError", "Store", "Transfer",
           "open_store", "read_manifest"]
