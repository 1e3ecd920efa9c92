"""A customer data platform on a Spark lakehouse: bronze → silver → OneID → gold, with consent."""

__version__ = "0.1.0"
