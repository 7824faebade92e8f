//! Flows: the 5-tuple of an inner packet, a bounded table of the flows seen, and the class
//! each falls in from what it does (interactive, bulk, default).
