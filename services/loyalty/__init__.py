"""The loyalty module: points customers earn and redeem, kept in a ledger, and the
tiers they reach. It references customers and owns that relationship; customers
knows nothing of it, and it knows nothing of orders."""
