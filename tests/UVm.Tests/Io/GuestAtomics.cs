using System.Buffers.Binary;
using NUnit.Framework;
using UVm.Faults;
using UVm.Io;
using UVm.Tests.TestSupport;
using UVm.Tests.Faults;

namespace UVm.Tests.Io;

/// <summary>
/// Atomic loads and compare-exchanges on guest memory: they never move the cursor, a
/// compare-exchange is a write even when it does not swap, and a fault leaves memory as it was.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class GuestAtomics : GuestFixture
{
    private const ulong Slot = Va + 64;

    private static uint U32(byte[] page, ulong va) => BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan((int)(va - Va)));
    private static ulong U64(byte[] page, ulong va) => BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan((int)(va - Va)));

    [Test]
    public void Compare_exchange_32_swaps_when_the_value_matches()
    {
        var frame = MapFilled(Va, 0);
        var writer = Space.Writer(Slot, 4);
        Assert.That(writer.WriteVal(7u).IsOk);

        writer = Space.Writer(Slot, 4);
        IoResult<uint> r = writer.AtomicCompareExchange(7u, 9u);

        Assert.That(r, Is.EqualTo(new IoResult<uint>(7, null, null)));
        Assert.That(U32(ContentsOf(frame), Slot), Is.EqualTo(9u));
        Assert.That(writer.Avail, Is.EqualTo(4UL), "the cursor does not move");
    }

    [Test]
    public void Compare_exchange_32_reports_the_current_value_when_it_does_not_match()
    {
        var frame = MapFilled(Va, 0);
        var writer = Space.Writer(Slot, 4);
        writer.WriteVal(5u);

        writer = Space.Writer(Slot, 4);
        IoResult<uint> r = writer.AtomicCompareExchange(7u, 9u);

        Assert.That(r, Is.EqualTo(new IoResult<uint>(5, null, null)));
        Assert.That(U32(ContentsOf(frame), Slot), Is.EqualTo(5u));
    }

    [Test]
    public void Compare_exchange_64_swaps_and_does_not_swap()
    {
        var frame = MapFilled(Va, 0);
        var writer = Space.Writer(Slot, 8);
        writer.WriteVal(0x1_0000_0001UL);

        writer = Space.Writer(Slot, 8);
        Assert.That(writer.AtomicCompareExchange(0x1_0000_0001UL, 0xFFFF_FFFF_0000_0002UL).Value, Is.EqualTo(0x1_0000_0001UL));
        Assert.That(U64(ContentsOf(frame), Slot), Is.EqualTo(0xFFFF_FFFF_0000_0002UL));

        Assert.That(writer.AtomicCompareExchange(0x1_0000_0001UL, 3UL).Value, Is.EqualTo(0xFFFF_FFFF_0000_0002UL));
        Assert.That(U64(ContentsOf(frame), Slot), Is.EqualTo(0xFFFF_FFFF_0000_0002UL));
    }

    [Test]
    public void Atomic_loads_read_without_moving_the_cursor()
    {
        MapFilled(Va, 0);
        var writer = Space.Writer(Slot, 8);
        writer.WriteVal(0x8877665544332211UL);

        var reader = Space.Reader(Slot, 8);
        Assert.That(reader.AtomicLoad64(), Is.EqualTo(new IoResult<ulong>(0x8877665544332211UL, null, null)));
        Assert.That(reader.AtomicLoad32(), Is.EqualTo(new IoResult<uint>(0x44332211u, null, null)));
        Assert.That(reader.Remain, Is.EqualTo(8UL));
    }

    [Test]
    public void Atomics_on_an_unmapped_page_fail_cleanly_and_map_nothing()
    {
        var writer = Space.Writer(Slot, 8);
        IoResult<uint> cas32 = writer.AtomicCompareExchange(0u, 1u);
        IoResult<ulong> cas64 = writer.AtomicCompareExchange(0UL, 1UL);
        var reader = Space.Reader(Slot, 8);
        IoResult<uint> load32 = reader.AtomicLoad32();
        IoResult<ulong> load64 = reader.AtomicLoad64();

        var writeFault = new PageFaultInfo(Slot, PageFaultAccess.Write, PageFaultKind.NotPresent, 11);
        var readFault = writeFault with { Access = PageFaultAccess.Read };
        Assert.That(cas32, Is.EqualTo(new IoResult<uint>(0, UVmError.PageFault, writeFault)));
        Assert.That(cas64, Is.EqualTo(new IoResult<ulong>(0, UVmError.PageFault, writeFault)));
        Assert.That(load32, Is.EqualTo(new IoResult<uint>(0, UVmError.PageFault, readFault)));
        Assert.That(load64, Is.EqualTo(new IoResult<ulong>(0, UVmError.PageFault, readFault)));
        using var cursor = Space.Cursor(VaddrRange.FromLength(Va, Page));
        Assert.That(cursor.Query().Item, Is.Null, "a failed atomic maps nothing");
    }

    [Test]
    public void Compare_exchange_on_a_read_only_page_faults_even_when_it_would_not_swap()
    {
        var frame = MapFilled(Va, 0x11, PageFlags.R);
        var writer = Space.Writer(Slot, 8);

        IoResult<uint> matching = writer.AtomicCompareExchange(0x11111111u, 2u);
        IoResult<ulong> different = writer.AtomicCompareExchange(5UL, 6UL);

        var fault = new PageFaultInfo(Slot, PageFaultAccess.Write, PageFaultKind.Protection, 11);
        Assert.That(matching, Is.EqualTo(new IoResult<uint>(0, UVmError.PageFault, fault)));
        Assert.That(different, Is.EqualTo(new IoResult<ulong>(0, UVmError.PageFault, fault)));
        Assert.That(ContentsOf(frame), Is.All.EqualTo((byte)0x11));

        var reader = Space.Reader(Slot, 8);
        Assert.That(reader.AtomicLoad32().Value, Is.EqualTo(0x11111111u), "a read-only page still loads");
    }

    [TestCase(1UL), TestCase(2UL), TestCase(3UL)]
    public void A_32_bit_atomic_at_an_unaligned_address_is_misuse(ulong misalign)
    {
        MapFilled(Va, 0);
        Assert.Throws<ArgumentException>(() => { var w = Space.Writer(Slot + misalign, 8); w.AtomicCompareExchange(0u, 1u); });
        Assert.Throws<ArgumentException>(() => { var r = Space.Reader(Slot + misalign, 8); r.AtomicLoad32(); });
    }

    [TestCase(4UL), TestCase(1UL), TestCase(7UL)]
    public void A_64_bit_atomic_at_an_unaligned_address_is_misuse(ulong misalign)
    {
        MapFilled(Va, 0);
        Assert.Throws<ArgumentException>(() => { var w = Space.Writer(Slot + misalign, 16); w.AtomicCompareExchange(0UL, 1UL); });
        Assert.Throws<ArgumentException>(() => { var r = Space.Reader(Slot + misalign, 16); r.AtomicLoad64(); });
    }

    [Test]
    public void An_atomic_needs_room_for_its_whole_width()
    {
        MapFilled(Va, 0);
        Assert.Throws<ArgumentException>(() => { var w = Space.Writer(Slot, 4); w.AtomicCompareExchange(0UL, 1UL); });
        Assert.Throws<ArgumentException>(() => { var r = Space.Reader(Slot, 3); r.AtomicLoad32(); });
    }

    [Test, CancelAfter(30_000)]
    public void Compare_exchange_is_atomic_across_threads()
    {
        var frame = MapFilled(Va, 0);
        const int threads = 4, perThread = 2000;
        var workers = TestThread.StartAll(threads, i => $"incrementer {i}", _ =>
        {
            Space.Activate();
            for (int i = 0; i < perThread; i++)
            {
                while (true)
                {
                    var r = Space.Reader(Slot, 8);
                    ulong seen = r.AtomicLoad64().Unwrap();
                    var w = Space.Writer(Slot, 8);
                    if (w.AtomicCompareExchange(seen, seen + 1).Unwrap() == seen) break;
                }
            }
        });
        TestThread.JoinAll(workers);

        Assert.That(U64(ContentsOf(frame), Slot), Is.EqualTo((ulong)(threads * perThread)));
    }
}
