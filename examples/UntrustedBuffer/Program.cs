// Reading an untrusted guest buffer, the way a kernel reads a system call's arguments. The guest
// hands us length-prefixed messages (a 32-bit little-endian length, then that many bytes), and
// lies: a length that runs into an unmapped page, a header that straddles the hole, a length
// far too large, a pointer outside its address space. Every read is fallible: nothing throws
// on a bad guest pointer, and a failed copy says exactly how many bytes arrived and where and
// why it faulted.
using System.Text;
using UVm;
using UVm.Faults;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;

const ulong MiB = 1UL << 20, Page = Paging.PageSize;
const ulong Buffer = 0x10_0000;           // two mapped guest pages: [Buffer, Buffer + 2 pages); the page after is a hole
const ulong Hole = Buffer + 2 * Page;
const ulong ReplyPage = 0x20_0000;        // a read-only page the guest asks us to write a reply into
const uint MaxMessage = 64 * 1024;        // our own limit, checked before reading anything
int failures = 0;

using var pool = new FramePool(16 * MiB);
using var space = new VmSpace(new VmSpaceOptions { Size = 1UL << 30, Pool = pool });
using (USegment buffer = pool.AllocSegment(2))
using (UFrame reply = pool.AllocFrame())
{
    using (CursorMut c = space.CursorMut(VaddrRange.FromLength(Buffer, 2 * Page))) c.Map(buffer, PageProperty.New(PageFlags.RW));
    using (CursorMut c = space.CursorMut(VaddrRange.FromLength(ReplyPage, Page))) c.Map(reply, PageProperty.New(PageFlags.R));
}
space.Activate();
Console.WriteLine($"UVm untrusted buffer: guest pages [0x{Buffer:x}, 0x{Hole:x}) mapped, 0x{Hole:x} is a hole, 0x{ReplyPage:x} is read-only.\n");

// The guest writes its messages (here through the same fallible writer a host would use).
PutMessage(Buffer, "hello from the guest"u8.ToArray());            // honest
PutLength(Hole - 0x100, 1000);                                     // claims 1000 bytes; only 252 follow before the hole
PutBytes(Hole - 2, [0xE8, 0x03]);                                  // a header whose last 2 bytes would be in the hole
PutLength(Buffer + 0x800, 0x7fff_ffff);                            // absurd length

Console.WriteLine("1. An honest message.");
Expect(ReadMessage(Buffer), Outcome.Ok, bytes: 20, null);

Console.WriteLine("\n2. A length that runs into the unmapped page: the payload copy stops at the exact byte.");
Expect(ReadMessage(Hole - 0x100), Outcome.Truncated, bytes: 0x100 - 4, new PageFaultInfo(Hole, PageFaultAccess.Read, PageFaultKind.NotPresent, 11));

Console.WriteLine("\n3. A header that straddles the hole: the 4-byte read fails whole, the cursor does not move.");
Expect(ReadMessage(Hole - 2), Outcome.BadHeader, bytes: 0, new PageFaultInfo(Hole, PageFaultAccess.Read, PageFaultKind.NotPresent, 11));

Console.WriteLine("\n4. An absurd length: refused by our own limit before any payload is read.");
Expect(ReadMessage(Buffer + 0x800), Outcome.TooLong, bytes: 0, null);

Console.WriteLine("\n5. A pointer whose range leaves the guest's address space: refused before any access.");
try
{
    space.Reader(space.Size - 2, 4);
    Console.WriteLine("  NOT refused");
    failures++;
}
catch (UVmException e) when (e.Error == UVmError.AccessDenied)
{
    Console.WriteLine($"  refused: {e.Message}");
}

Console.WriteLine("\n6. A reply written into the guest's read-only page: nothing is written.");
{
    var writer = space.Writer(ReplyPage, 16);
    CopyResult r = writer.WriteFallible("reply from host!"u8);
    Console.WriteLine($"  wrote {r.Bytes} of 16 bytes; fault at 0x{r.Fault?.Address:x} ({r.Fault?.Access}, {r.Fault?.Kind})");
    if (r.Bytes != 0 || r.Fault != new PageFaultInfo(ReplyPage, PageFaultAccess.Write, PageFaultKind.Protection, 11)) { Console.WriteLine("  UNEXPECTED"); failures++; }
}

Console.WriteLine($"\nunresolved faults reported by the space: {space.UnresolvedFaults} (each bad access above, none thrown)");
Console.WriteLine(failures == 0 ? "untrusted buffer: all checks passed" : $"untrusted buffer: {failures} checks FAILED");
return failures == 0 ? 0 : 1;

// Reads the message at guest address va, trusting nothing in it.
Message ReadMessage(ulong va)
{
    var reader = space.Reader(va, Hole + Page - va);                 // the guest said: "my buffer starts at va"
    IoResult<uint> header = reader.ReadVal<uint>();
    if (!header.IsOk) return new Message(Outcome.BadHeader, 0, 0, header.Fault, reader.GuestAddress());
    uint length = header.Value;
    if (length > MaxMessage) return new Message(Outcome.TooLong, length, 0, null, reader.GuestAddress());
    var payload = new byte[length];
    CopyResult r = reader.ReadFallible(payload);
    if (r.IsOk) Console.WriteLine($"  payload: \"{Printable(payload)}\"");
    return new Message(r.IsOk ? Outcome.Ok : Outcome.Truncated, length, r.Bytes, r.Fault, reader.GuestAddress());
}

void Expect(Message m, Outcome outcome, ulong bytes, PageFaultInfo? fault)
{
    Console.WriteLine($"  {m.Outcome}: length field {m.Length}, payload bytes read {m.Bytes}, reader now at 0x{m.Next:x}" +
        (m.Fault is { } f ? $", fault at 0x{f.Address:x} ({f.Access}, {f.Kind})" : ""));
    if (m.Outcome == outcome && m.Bytes == bytes && m.Fault == fault) return;
    Console.WriteLine($"  UNEXPECTED: wanted {outcome}, {bytes} bytes, fault {fault?.ToString() ?? "none"}");
    failures++;
}

void PutLength(ulong va, uint length) => PutBytes(va, BitConverter.GetBytes(length));

void PutMessage(ulong va, byte[] payload)
{
    PutLength(va, (uint)payload.Length);
    PutBytes(va + 4, payload);
}

void PutBytes(ulong va, byte[] bytes)
{
    var writer = space.Writer(va, (ulong)bytes.Length);
    if (!writer.WriteFallible(bytes).IsOk) throw new InvalidOperationException($"setup: cannot write at 0x{va:x}");
}

static string Printable(ReadOnlySpan<byte> bytes)
{
    var s = new StringBuilder();
    foreach (byte b in bytes) s.Append(b is >= 0x20 and < 0x7f ? (char)b : '.');
    return s.ToString();
}

enum Outcome { Ok, Truncated, BadHeader, TooLong }

readonly record struct Message(Outcome Outcome, uint Length, ulong Bytes, PageFaultInfo? Fault, ulong Next);
