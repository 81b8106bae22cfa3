"""The orders module: orders, their lines, and the customer relationship it owns
(order history and order statistics). It depends on customers; customers knows
nothing of it."""
