// A node-opcua server for the gateway's OPC UA interop tests (issue 10): a second OPC UA
// implementation, written independently of asyncua, to test our client side against.
//
//   node server.js PORT [DOUBLES=10] [PERIOD_MS=100]
//
// Address space (namespace 1, the server's own), the same shape as the asyncua test server in
// tests/opcua_servers.py:
//   Objects/Plant/Doubles/Value0..Value{N-1}  Double, all changing every PERIOD_MS
//   Objects/Plant/Typed/...                   one variable per type the driver maps, a writable
//                                             Setpoint, analog items with EngineeringUnits and
//                                             EURange, and two that discovery must skip (a
//                                             ByteString and a Double array)
// Prints "READY opc.tcp://127.0.0.1:PORT" on stdout once it accepts connections; exits on
// SIGTERM/SIGINT. Security: None only (the driver's security tests use asyncua's server).
"use strict";
const path = require("path");
const {
  OPCUAServer,
  OPCUACertificateManager,
  DataType,
  Variant,
  VariantArrayType,
  MessageSecurityMode,
  SecurityPolicy,
  standardUnits,
} = require("node-opcua");

const port = parseInt(process.argv[2], 10);
const doubles = parseInt(process.argv[3] || "10", 10);
const periodMs = parseInt(process.argv[4] || "100", 10);
if (!(port > 0 && port < 65536) || !(doubles >= 0) || !(periodMs > 0)) {
  console.error("usage: node server.js PORT [DOUBLES] [PERIOD_MS]");
  process.exit(2);
}

async function main() {
  // The server's own certificate is made once and kept under node_modules (gitignored, and
  // rebuilt with it by `npm ci`), not in the user's home folder.
  const pki = path.join(__dirname, "node_modules", ".cache", "gateway-pki");
  const certificateManager = new OPCUACertificateManager({ rootFolder: pki, automaticallyAcceptUnknownCertificate: true });
  const server = new OPCUAServer({
    port,
    resourcePath: "",
    serverCertificateManager: certificateManager,
    securityPolicies: [SecurityPolicy.None],
    securityModes: [MessageSecurityMode.None],
    allowAnonymous: true,
    buildInfo: { productName: "gateway interop test server (node-opcua)" },
  });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  const ns = addressSpace.getOwnNamespace();

  const plant = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "Plant", nodeId: "s=Plant" });
  const folder = ns.addObject({ componentOf: plant, browseName: "Doubles", nodeId: "s=Plant.Doubles" });
  const vars = [];
  for (let i = 0; i < doubles; i++) {
    vars.push(
      ns.addVariable({
        componentOf: folder,
        browseName: `Value${i}`,
        nodeId: `s=Plant.Doubles.Value${i}`,
        dataType: "Double",
        accessLevel: "CurrentRead",
        userAccessLevel: "CurrentRead",
        minimumSamplingInterval: 0,
        value: new Variant({ dataType: DataType.Double, value: 0 }),
      }),
    );
  }

  const typed = ns.addObject({ componentOf: plant, browseName: "Typed", nodeId: "s=Plant.Typed" });
  const add = (name, dataType, value, extra = {}) =>
    ns.addVariable({
      componentOf: typed,
      browseName: name,
      nodeId: `s=Plant.Typed.${name}`,
      dataType,
      minimumSamplingInterval: 0,
      value: new Variant({ dataType: DataType[dataType], value, ...(extra.variant || {}) }),
      description: extra.description,
      valueRank: extra.valueRank,
      arrayDimensions: extra.arrayDimensions,
      accessLevel: extra.accessLevel || "CurrentRead",
      userAccessLevel: extra.accessLevel || "CurrentRead",
    });
  const running = add("Running", "Boolean", true, { description: "Machine running" });
  const counter = add("Counter", "Int32", 0, { description: "Signed counter" });
  const status = add("StatusWord", "UInt16", 0x0101);
  const energy = add("EnergyWh", "Int64", [0, 123456], {
    description: "Energy, 64-bit",
    variant: { arrayType: VariantArrayType.Scalar },
  });
  const ratio = add("Ratio", "Float", 0.5);
  const label = add("Label", "String", "batch-1", { description: "Current batch, text" });
  const stamp = add("LastChange", "DateTime", new Date());
  add("Setpoint", "Double", 12.5, { description: "Writable setpoint", accessLevel: "CurrentRead | CurrentWrite" });
  add("Interval", "Duration", 250, { description: "Sampling interval, ms", variant: { dataType: DataType.Double } });
  add("State", "ServerState", 0, { description: "A state, as an enumeration", variant: { dataType: DataType.Int32 } });
  add("RawFrame", "ByteString", Buffer.from([1, 2, 3]), { description: "Opaque bytes" });
  add("Spectrum", "Double", new Float64Array([1, 2, 3, 4]), {
    variant: { arrayType: VariantArrayType.Array },
    valueRank: 1,
    arrayDimensions: [4],
  });
  const temperature = ns.addAnalogDataItem({
    componentOf: typed,
    browseName: "Temperature",
    nodeId: "s=Plant.Typed.Temperature",
    dataType: "Double",
    description: "Oven temperature",
    engineeringUnitsRange: { low: -40, high: 200 },
    engineeringUnits: standardUnits.degree_celsius,
    accessLevel: "CurrentRead",
    userAccessLevel: "CurrentRead",
    minimumSamplingInterval: 0,
    value: new Variant({ dataType: DataType.Double, value: 20 }),
  });
  ns.addAnalogDataItem({
    componentOf: typed,
    browseName: "Pressure",
    nodeId: "s=Plant.Typed.Pressure",
    dataType: "Float",
    engineeringUnitsRange: { low: 0, high: 16 },
    engineeringUnits: standardUnits.bar,
    accessLevel: "CurrentRead",
    userAccessLevel: "CurrentRead",
    value: new Variant({ dataType: DataType.Float, value: 6 }),
  });

  await server.start();
  let tick = 0;
  setInterval(() => {
    tick++;
    const t = tick * periodMs / 1000;
    for (let i = 0; i < vars.length; i++) {
      vars[i].setValueFromSource(new Variant({ dataType: DataType.Double, value: 1000 + 900 * Math.sin(0.5 * t + i) }));
    }
    counter.setValueFromSource(new Variant({ dataType: DataType.Int32, value: tick }));
    temperature.setValueFromSource(new Variant({ dataType: DataType.Double, value: 20 + 5 * Math.sin(t) }));
    ratio.setValueFromSource(new Variant({ dataType: DataType.Float, value: (tick % 100) / 100 }));
    status.setValueFromSource(new Variant({ dataType: DataType.UInt16, value: 0x0100 | (tick & 0xff) }));
    energy.setValueFromSource(
      new Variant({ dataType: DataType.Int64, arrayType: VariantArrayType.Scalar, value: [0, 123456 + tick] }),
    );
    if (tick % 10 === 0) {
      running.setValueFromSource(new Variant({ dataType: DataType.Boolean, value: (tick / 10) % 2 === 0 }));
      label.setValueFromSource(new Variant({ dataType: DataType.String, value: `batch-${tick / 10}` }));
      stamp.setValueFromSource(new Variant({ dataType: DataType.DateTime, value: new Date() }));
    }
  }, periodMs);

  const stop = async () => {
    await server.shutdown(0);
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  process.stdout.write(`READY opc.tcp://127.0.0.1:${port}\n`);
}

main().catch((err) => {
  console.error(`node-opcua server: ${err && err.message ? err.message : err}`);
  process.exit(1);
});
