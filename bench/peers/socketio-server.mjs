// socket.io 4 room server for the headcount benchmarks: rooms, broadcast, and a presence-ish
// member list per room. Listens on 127.0.0.1 only (PORT, default 4001).
//
// Events (what the load generator emits):
//   join(room, member, ack): joins `room`; a non-null member is added to the room's list, the
//     others are told `joined(member)`, and the ack carries the list (the joiner included);
//   pub(room, body): the room, sender excluded, gets `msg(body)`;
//   disconnect: the room is told `left(member)`.
import http from "node:http";
import { Server } from "socket.io";

const port = Number(process.env.PORT || 4001);
const httpServer = http.createServer();
const io = new Server(httpServer, {
  serveClient: false,
  transports: ["websocket"],
  perMessageDeflate: false,
  maxHttpBufferSize: 1e6,
});

/** @type {Map<string, Map<string, object>>} room -> socket id -> member */
const rooms = new Map();

io.on("connection", (socket) => {
  socket.on("join", (room, member, ack) => {
    socket.join(room);
    let members = rooms.get(room);
    if (!members) {
      members = new Map();
      rooms.set(room, members);
    }
    if (member != null) {
      members.set(socket.id, member);
      socket.data.room = room;
      socket.data.member = member;
      socket.to(room).emit("joined", member);
    }
    if (typeof ack === "function") ack([...members.values()]);
  });
  socket.on("pub", (room, body) => {
    socket.to(room).emit("msg", body);
  });
  socket.on("disconnect", () => {
    const { room, member } = socket.data;
    if (room === undefined) return;
    const members = rooms.get(room);
    if (members) {
      members.delete(socket.id);
      if (members.size === 0) rooms.delete(room);
    }
    socket.to(room).emit("left", member);
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`socket.io listening on 127.0.0.1:${port}`);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
