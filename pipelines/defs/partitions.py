"""One dynamic partition per deposit folder dropped into the inbox."""
import dagster as dg

deposits = dg.DynamicPartitionsDefinition(name="deposits")
