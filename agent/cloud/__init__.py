"""The other end of the wire (reference, not on the gateway): the receiver and the operator's
command tool."""
