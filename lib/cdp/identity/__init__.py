"""OneID: link every record of a person through shared, trustworthy identifiers."""
