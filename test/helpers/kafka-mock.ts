// The local Kafka-protocol broker lives with its C source; tests import it from here.
export * from "../../tools/kafka-mock/kafka-mock.js";
