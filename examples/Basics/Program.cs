// A tour of UVm's core: a guest space whose page table is mirrored onto the host MMU.
// Every step prints what the page table says and proves that the kernel agrees,
// by reading /proc/self/maps.
using UVm;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;

const ulong MiB = 1UL << 20;
using var pool = new FramePool(64 * MiB);
using var space = new VmSpace(new VmSpaceOptions { Size = 1UL << 30, Pool = pool });
Console.WriteLine($"A guest space of {space.Size / MiB} MiB lives at host address 0x{space.HostBase:x}.");

void Show(string step)
{
    IReadOnlyList<MirrorDifference> diffs = space.CheckHostMirror();
    Console.WriteLine($"  {step}: frames in use {pool.FramesInUse}, host syscalls {space.HostStats.Syscalls}, " +
        $"host mappings {space.CountHostMappings()}, host mirrors page table: {(diffs.Count == 0 ? "yes" : "NO\n    " + string.Join("\n    ", diffs))}");
}

var text = "hello from the guest"u8;
var range = VaddrRange.FromLength(16 * MiB, 8 * 4096);
using (var segment = pool.AllocSegment(8))
{
    var w = segment.Writer();
    w.Write(text);
    using var cursor = space.CursorMut(range);
    cursor.Map(segment, PageProperty.New(PageFlags.RW));
    Console.WriteLine($"1. mapped 8 frames at guest 0x{range.Start:x}; {cursor.Flusher.PendingOps} host operation pending");
}
Show("after map");

unsafe
{
    // SAFETY: the range was just mapped RW and the cursor's Dispose dispatched it, so the host maps
    // these bytes (a direct host access to a page UVm has not mapped would crash, not fault).
    var host = new ReadOnlySpan<byte>((byte*)(space.HostBase + (nint)range.Start), text.Length);
    Console.WriteLine($"2. the host MMU shows the frame at Base + va: \"{System.Text.Encoding.ASCII.GetString(host)}\"");
}

using (var cursor = space.CursorMut(range))
{
    // ProtectNext changes one mapped slot per call and moves past it, so loop over the span.
    ulong end = range.Start + 4 * 4096;
    cursor.Jump(range.Start + 4096);
    int slots = 0;
    while (cursor.VirtAddr < end && cursor.ProtectNext(end - cursor.VirtAddr, (ref PageFlags f, ref CachePolicy _) => f = PageFlags.R) is not null) slots++;
    Console.WriteLine($"3. made {slots} pages read-only; {cursor.Flusher.PendingOps} host operation pending: until it is dispatched the host may still allow writes, like a stale TLB");
    cursor.Flusher.DispatchTlbFlush();
}
Show("after protect");

using (var cursor = space.Cursor(range))
{
    Console.WriteLine("4. what the page table says:");
    foreach (var (slot, item) in cursor)
    {
        Console.WriteLine($"   {slot}  {item switch { MappedRam r => $"frame 0x{r.Frame.Paddr:x} {r.Prop.Flags}", null => "hole", _ => item.ToString() }}");
        item?.Dispose();
    }
}

using (var cursor = space.CursorMut(range))
    Console.WriteLine($"5. unmapped {cursor.Unmap(range.Length)} frames");
Show("after unmap");
