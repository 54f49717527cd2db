using System.Buffers.Binary;
using NUnit.Framework;
using UVm.Faults;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.Faults;
using UVm.Tests.TestSupport;

namespace UVm.Tests.Io;

/// <summary>
/// The space's one-call accessors (values, copies, scatter/gather) on a real host: contents,
/// exact counts, the fault's kind and address, and the space unchanged after a failure. They need
/// no activation: every test deactivates the thread first.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class OneCallAccess : GuestFixture
{
    private const ulong Size = 1UL << 30;

    [SetUp]
    public void NoActivation() => VmSpace.Deactivate();

    private static PageFaultInfo Fault(ulong va, PageFaultAccess access, PageFaultKind kind) => new(va, access, kind, 11);

    private List<MappedSlot> Slots() => GuestMemory.Slots(Space, new VaddrRange(0, Size));

    [Test]
    public void Values_are_read_and_written_without_activation()
    {
        UFrame frame = MapPatterned(Va);
        Assert.That(Space.IsActiveOnCurrentThread, Is.False, "precondition");

        Assert.That(Space.TryRead(Va + 8, out ulong v), Is.True);
        Assert.That(v, Is.EqualTo(BinaryPrimitives.ReadUInt64LittleEndian(PatternOf(Va + 8, 8))));
        Assert.That(Space.ReadVal<ushort>(Va + 3), Is.EqualTo(new IoResult<ushort>(BinaryPrimitives.ReadUInt16LittleEndian(PatternOf(Va + 3, 2)), null, null)));

        Assert.That(Space.TryWrite(Va + 16, 0x1122334455667788UL), Is.True);
        Assert.That(Space.WriteVal(Va + 25, (byte)0xAB), Is.EqualTo(new IoResult<byte>(0xAB, null, null)));
        byte[] page = ContentsOf(frame);
        Assert.That(BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan(16)), Is.EqualTo(0x1122334455667788UL));
        Assert.That(page[25], Is.EqualTo(0xAB));
        Assert.That(page[24], Is.EqualTo(PatternAt(Va + 24)), "the neighbours are untouched");
        Assert.That(page[26], Is.EqualTo(PatternAt(Va + 26)));
    }

    [Test]
    public void A_value_larger_than_8_bytes_goes_whole_or_not_at_all()
    {
        MapPatterned(Va);
        Assert.That(Space.TryRead(Va + Page - 16, out Guid g), Is.True);
        Assert.That(g, Is.EqualTo(new Guid(PatternOf(Va + Page - 16, 16))));
        Assert.That(Space.TryRead(Va + Page - 8, out Guid torn), Is.False, "the second half is unmapped");
        Assert.That(torn, Is.EqualTo(default(Guid)));
        Assert.That(Space.ReadVal<Guid>(Va + Page - 8).Fault, Is.EqualTo(Fault(Va + Page, PageFaultAccess.Read, PageFaultKind.NotPresent)));
    }

    [Test]
    public void Faults_of_values_are_results_and_change_nothing()
    {
        UFrame ro = MapFilled(Va, 0x5A, PageFlags.R);
        List<MappedSlot> before = Slots();

        Assert.That(Space.TryRead(Va + Page, out ulong v), Is.False);
        Assert.That(v, Is.Zero);
        Assert.That(Space.ReadVal<uint>(Va + Page + 4), Is.EqualTo(new IoResult<uint>(0, UVmError.PageFault, Fault(Va + Page + 4, PageFaultAccess.Read, PageFaultKind.NotPresent))));
        Assert.That(Space.TryWrite(Va, 1UL), Is.False);
        Assert.That(Space.WriteVal(Va + 8, 1u), Is.EqualTo(new IoResult<uint>(0, UVmError.PageFault, Fault(Va + 8, PageFaultAccess.Write, PageFaultKind.Protection))));

        Assert.That(ContentsOf(ro), Is.All.EqualTo((byte)0x5A));
        Assert.That(Slots(), Is.EqualTo(before));
        Assert.That(Space.CheckHostMirror(), Is.Empty);
    }

    /// <summary>Addresses at the edges of the space, of the 47/52/64-bit address spaces, and their neighbours.</summary>
    private static IEnumerable<ulong> Extremes()
    {
        ulong[] centres = [0, 1, Page - 1, Size - 8, Size - 1, Size, 1UL << 47, 1UL << 52, 1UL << 63, ulong.MaxValue - 7, ulong.MaxValue];
        foreach (ulong c in centres)
            foreach (long d in new long[] { -1, 0, 1 })
                yield return unchecked(c + (ulong)d);
    }

    [TestCaseSource(nameof(Extremes))]
    public void A_value_at_an_extreme_address_is_a_fault_at_the_exact_byte(ulong va)
    {
        long unresolved = Space.UnresolvedFaults;
        ulong end = unchecked(va + 8);
        bool inside = end >= va && end <= Size;
        var kind = inside ? PageFaultKind.NotPresent : PageFaultKind.OutOfRange;
        ulong at = inside || va >= Size ? va : Size; // the first byte outside the space
        Assert.That(Space.TryRead(va, out ulong _), Is.False);
        Assert.That(Space.TryWrite(va, 1UL), Is.False);
        Assert.That(Space.ReadVal<ulong>(va), Is.EqualTo(new IoResult<ulong>(0, UVmError.PageFault, Fault(at, PageFaultAccess.Read, kind))));
        Assert.That(Space.WriteVal(va, 1UL), Is.EqualTo(new IoResult<ulong>(0, UVmError.PageFault, Fault(at, PageFaultAccess.Write, kind))));
        Assert.That(Space.UnresolvedFaults - unresolved, Is.EqualTo(4), "every one counts as an unresolved fault");
        Assert.That(Slots(), Is.Empty, "nothing was mapped");
    }

    [TestCaseSource(nameof(Extremes))]
    public void A_copy_at_an_extreme_address_stops_at_the_exact_byte(ulong va)
    {
        MapFilled(Size - Page, 0x77);                   // the last page of the space is mapped
        var buffer = Filled(16, 0xEE);
        ulong mappedFrom = Size - Page;
        // Bytes copied: those inside the space and mapped, from va on.
        ulong inside = va >= Size ? 0 : Math.Min(16UL, Size - va);
        ulong copied = va >= mappedFrom ? inside : 0;
        ulong stop = unchecked(va + copied);
        var kind = va < mappedFrom ? PageFaultKind.NotPresent : PageFaultKind.OutOfRange;
        CopyResult r = Space.Read(va, buffer);
        Assert.That(r, Is.EqualTo(new CopyResult(copied, UVmError.PageFault, Fault(stop, PageFaultAccess.Read, kind))));
        Assert.That(buffer.Take((int)copied), Is.All.EqualTo((byte)0x77));
        Assert.That(buffer.Skip((int)copied), Is.All.EqualTo((byte)0xEE), "nothing written past the count");
        Assert.That(Space.Write(va, Filled(16, 0x11)), Is.EqualTo(new CopyResult(copied, UVmError.PageFault, Fault(stop, PageFaultAccess.Write, kind))));
    }

    [Test]
    public void A_copy_across_pages_resolves_faults_and_counts_exactly()
    {
        var pager = new DemandPager();
        Space.RegisterPageFaultHandler(pager.Handle);
        MapPatterned(Va);
        var buffer = new byte[3 * Page];

        CopyResult r = Space.Read(Va + 100, buffer);

        Assert.That(r, Is.EqualTo(new CopyResult(3 * Page, null, null)));
        Assert.That(buffer, Is.EqualTo(PatternOf(Va + 100, (int)(3 * Page))));
        Assert.That(pager.Calls, Is.EqualTo(3), "the pages after the first were paged in");
        Assert.That(Space.Write(Va + 10, new byte[] { 1, 2, 3 }), Is.EqualTo(new CopyResult(3, null, null)));
        Assert.That(Space.ReadVal<byte>(Va + 12).Value, Is.EqualTo(3));
    }

    [Test]
    public void An_empty_span_copies_nothing_and_succeeds_anywhere()
    {
        foreach (ulong va in new[] { 0UL, Size, ulong.MaxValue })
        {
            Assert.That(Space.Read(va, Span<byte>.Empty), Is.EqualTo(new CopyResult(0, null, null)));
            Assert.That(Space.Write(va, ReadOnlySpan<byte>.Empty), Is.EqualTo(new CopyResult(0, null, null)));
            Assert.That(Space.Read(va, default(Span<byte>)), Is.EqualTo(new CopyResult(0, null, null)), "a default (null) span");
        }
    }

    [Test]
    public void Gather_reads_the_ranges_in_order_and_counts_exactly()
    {
        MapPatterned(Va);
        MapPatterned(Va + Page);
        GuestRange[] ranges = [new(Va + 10, 5), new(ulong.MaxValue, 0), new(Va + Page - 3, 6), new(Va, 1)];
        var buffer = Filled(16, 0xEE);

        CopyResult r = Space.Gather(ranges, buffer);

        Assert.That(r, Is.EqualTo(new CopyResult(12, null, null)), "the empty range at the top of the address space is not touched");
        Assert.That(buffer.Take(12), Is.EqualTo(PatternOf(Va + 10, 5).Concat(PatternOf(Va + Page - 3, 6)).Concat(PatternOf(Va, 1))));
        Assert.That(buffer.Skip(12), Is.All.EqualTo((byte)0xEE));
    }

    [Test]
    public void Gather_stops_when_the_destination_is_full_and_checks_nothing_past_it()
    {
        MapPatterned(Va);
        GuestRange[] ranges = [new(Va, 6), new(Va + 100, 10), new(Size, 8), new(ulong.MaxValue, ulong.MaxValue)];
        var buffer = new byte[10];
        Assert.That(Space.Gather(ranges, buffer), Is.EqualTo(new CopyResult(10, null, null)));
        Assert.That(buffer, Is.EqualTo(PatternOf(Va, 6).Concat(PatternOf(Va + 100, 4))));
        Assert.That(Space.Gather(ReadOnlySpan<GuestRange>.Empty, buffer), Is.EqualTo(new CopyResult(0, null, null)));
        Assert.That(Space.Gather(ranges, Span<byte>.Empty), Is.EqualTo(new CopyResult(0, null, null)));
    }

    [TestCase(Size - 8, ulong.MaxValue, 8UL, Size, TestName = "a range whose length overflows va + len: fault at the end of the space")]
    [TestCase(Size - 8, 64UL, 8UL, Size, TestName = "a range that passes the end: fault at the end of the space")]
    [TestCase(ulong.MaxValue - 3, 8UL, 0UL, ulong.MaxValue - 3, TestName = "a range at the top of the address space: fault at its first byte")]
    [TestCase(1UL << 63, ulong.MaxValue, 0UL, 1UL << 63, TestName = "a range at 2^63 of length 2^64-1")]
    public void Gather_and_scatter_fault_at_the_first_byte_outside_the_space(ulong va, ulong len, ulong insideBytes, ulong faultAt)
    {
        MapFilled(Size - Page, 0x66);
        MapPatterned(Va);
        GuestRange[] ranges = [new(Va, 4), new(va, len), new(Va, 4)];
        var buffer = Filled(64, 0xEE);

        CopyResult r = Space.Gather(ranges, buffer);

        Assert.That(r, Is.EqualTo(new CopyResult(4 + insideBytes, UVmError.PageFault, Fault(faultAt, PageFaultAccess.Read, PageFaultKind.OutOfRange))));
        Assert.That(buffer.Take(4), Is.EqualTo(PatternOf(Va, 4)));
        Assert.That(buffer.Skip(4).Take((int)insideBytes), Is.All.EqualTo((byte)0x66));
        Assert.That(buffer.Skip(4 + (int)insideBytes), Is.All.EqualTo((byte)0xEE), "nothing past the count, the third range not read");

        CopyResult w = Space.Scatter(Filled(64, 0x99), ranges);
        Assert.That(w, Is.EqualTo(new CopyResult(4 + insideBytes, UVmError.PageFault, Fault(faultAt, PageFaultAccess.Write, PageFaultKind.OutOfRange))));
    }

    [Test]
    public void Scatter_writes_the_ranges_in_order_and_nothing_else()
    {
        UFrame frame = MapFilled(Va, 0);
        GuestRange[] ranges = [new(Va + 100, 3), new(Va + 10, 2), new(Va + 200, 100)];

        CopyResult r = Space.Scatter(new byte[] { 1, 2, 3, 4, 5, 6, 7 }, ranges);

        Assert.That(r, Is.EqualTo(new CopyResult(7, null, null)), "the source is used up in the third range");
        byte[] page = ContentsOf(frame);
        Assert.That(page.AsSpan(100, 3).ToArray(), Is.EqualTo(new byte[] { 1, 2, 3 }));
        Assert.That(page.AsSpan(10, 2).ToArray(), Is.EqualTo(new byte[] { 4, 5 }));
        Assert.That(page.AsSpan(200, 2).ToArray(), Is.EqualTo(new byte[] { 6, 7 }));
        Assert.That(page.Count(b => b != 0), Is.EqualTo(7));
    }

    [Test]
    public void Scatter_into_a_hole_stops_at_its_first_byte_with_the_exact_count()
    {
        UFrame frame = MapFilled(Va, 0);
        GuestRange[] ranges = [new(Va + Page - 5, 10)];
        Assert.That(Space.Scatter(Filled(10, 0x42), ranges),
            Is.EqualTo(new CopyResult(5, UVmError.PageFault, Fault(Va + Page, PageFaultAccess.Write, PageFaultKind.NotPresent))));
        Assert.That(ContentsOf(frame).Skip((int)Page - 5), Is.All.EqualTo((byte)0x42));
        Assert.That(ContentsOf(frame).Take((int)Page - 5), Is.All.EqualTo((byte)0));
    }

    [Test]
    public void A_disposed_space_answers_every_access_with_a_fault_not_an_exception()
    {
        var space = new VmSpace(new VmSpaceOptions { Size = 4UL << 20, Pool = Pool });
        MapFrame(space, 0, PageFlags.RW, Filled(16, 0x33));
        space.Dispose();
        var buffer = Filled(8, 0xEE);
        var notPresent = Fault(0, PageFaultAccess.Read, PageFaultKind.NotPresent);

        Assert.That(space.TryRead(0, out ulong v), Is.False);
        Assert.That(v, Is.Zero);
        Assert.That(space.TryWrite(0, 1UL), Is.False);
        Assert.That(space.ReadVal<ulong>(0), Is.EqualTo(new IoResult<ulong>(0, UVmError.PageFault, notPresent)));
        Assert.That(space.Read(0, buffer), Is.EqualTo(new CopyResult(0, UVmError.PageFault, notPresent)));
        Assert.That(buffer, Is.All.EqualTo((byte)0xEE));
        Assert.That(space.Write(0, buffer), Is.EqualTo(new CopyResult(0, UVmError.PageFault, notPresent with { Access = PageFaultAccess.Write })));
        Assert.That(space.Gather([new GuestRange(0, 8)], buffer), Is.EqualTo(new CopyResult(0, UVmError.PageFault, notPresent)));
        Assert.That(space.AtomicSwap(0, 1UL), Is.EqualTo(new IoResult<ulong>(0, UVmError.PageFault, notPresent with { Access = PageFaultAccess.Write })));
        Assert.That(space.ReadVal<ulong>(4UL << 20).Fault!.Value.Kind, Is.EqualTo(PageFaultKind.OutOfRange), "outside stays outside");
        Assert.That(space.Read(0, Span<byte>.Empty).IsOk, Is.True, "an empty copy touches nothing");
    }

    [Test, CancelAfter(30_000)]
    public void Works_on_any_thread_whatever_is_activated_there()
    {
        var pager = new DemandPager();
        Space.RegisterPageFaultHandler(pager.Handle);
        var other = new VmSpace(new VmSpaceOptions { Size = 4UL << 20, Pool = Pool });
        try
        {
            Deadlines.OnOtherThread(() =>
            {
                using (other.Activate())
                {
                    Assert.That(Space.TryRead(Va + 8, out ulong v), Is.True, "paged in by this space's handler, not the active space's");
                    Assert.That(v, Is.EqualTo(BinaryPrimitives.ReadUInt64LittleEndian(PatternOf(Va + 8, 8))));
                    Assert.That(VmSpace.Current, Is.SameAs(other), "the access left the thread's activation alone");
                }
                Assert.That(Space.TryWrite(Va, 5UL), Is.True, "nothing activated");
            }, "unactivated thread");
        }
        finally
        {
            other.Dispose();
        }
        Assert.That(pager.Calls, Is.EqualTo(1));
        Assert.That(Space.ReadVal<ulong>(Va).Value, Is.EqualTo(5UL));
    }
}
