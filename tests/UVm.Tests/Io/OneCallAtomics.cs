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
/// The space's one-call atomics (load, store, swap, compare-exchange) and the writer's new swap
/// and store: what they return, what memory holds after, and that every address the guest can
/// name is a result: misaligned is <see cref="UVmError.InvalidArgs"/>, outside is an
/// out-of-range fault, a read-only page a protection fault even for a store of the same value.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class OneCallAtomics : GuestFixture
{
    private const ulong Size = 1UL << 30;
    private const ulong Slot = Va + 64;

    [SetUp]
    public void NoActivation() => VmSpace.Deactivate();

    private static ulong U64(byte[] page, ulong va) => BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan((int)(va - Va)));
    private static uint U32(byte[] page, ulong va) => BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan((int)(va - Va)));
    private static PageFaultInfo Fault(ulong va, PageFaultAccess access, PageFaultKind kind) => new(va, access, kind, 11);

    [Test]
    public void Swap_store_compare_exchange_and_load_32()
    {
        UFrame frame = MapFilled(Va, 0);
        Assert.That(Space.AtomicStore(Slot, 7u), Is.EqualTo(new IoResult<uint>(7, null, null)));
        Assert.That(Space.AtomicSwap(Slot, 0xFFFF_FFFFu), Is.EqualTo(new IoResult<uint>(7, null, null)));
        Assert.That(Space.AtomicCompareExchange(Slot, 7u, 1u), Is.EqualTo(new IoResult<uint>(0xFFFF_FFFF, null, null)), "no swap");
        Assert.That(Space.AtomicLoad32(Slot), Is.EqualTo(new IoResult<uint>(0xFFFF_FFFF, null, null)));
        Assert.That(Space.AtomicCompareExchange(Slot, 0xFFFF_FFFFu, 2u), Is.EqualTo(new IoResult<uint>(0xFFFF_FFFF, null, null)), "swap");
        byte[] page = ContentsOf(frame);
        Assert.That(U32(page, Slot), Is.EqualTo(2u));
        Assert.That(U32(page, Slot + 4), Is.Zero, "the neighbour is untouched");
    }

    [Test]
    public void Swap_store_compare_exchange_and_load_64()
    {
        UFrame frame = MapFilled(Va, 0);
        Assert.That(Space.AtomicStore(Slot, 0x1_0000_0001UL), Is.EqualTo(new IoResult<ulong>(0x1_0000_0001UL, null, null)));
        Assert.That(Space.AtomicSwap(Slot, ulong.MaxValue), Is.EqualTo(new IoResult<ulong>(0x1_0000_0001UL, null, null)));
        Assert.That(Space.AtomicCompareExchange(Slot, 1UL, 3UL).Value, Is.EqualTo(ulong.MaxValue));
        Assert.That(Space.AtomicCompareExchange(Slot, ulong.MaxValue, 3UL).Value, Is.EqualTo(ulong.MaxValue));
        Assert.That(Space.AtomicLoad64(Slot).Value, Is.EqualTo(3UL));
        Assert.That(U64(ContentsOf(frame), Slot), Is.EqualTo(3UL));
    }

    [Test]
    public void The_writer_swaps_and_stores_too()
    {
        UFrame frame = MapFilled(Va, 0);
        using (Space.Activate())
        {
            var w = Space.Writer(Slot, 8);
            Assert.That(w.AtomicStore(5UL), Is.EqualTo(new IoResult<ulong>(5, null, null)));
            Assert.That(w.AtomicSwap(6UL), Is.EqualTo(new IoResult<ulong>(5, null, null)));
            Assert.That(w.AtomicSwap(9u), Is.EqualTo(new IoResult<uint>(6, null, null)));
            Assert.That(w.AtomicStore(10u), Is.EqualTo(new IoResult<uint>(10, null, null)));
            Assert.That(w.Avail, Is.EqualTo(8UL), "the cursor does not move");
            Assert.Throws<ArgumentException>(() => { var m = Space.Writer(Slot + 2, 8); m.AtomicSwap(1u); }, "a misaligned writer cursor is the embedder's misuse");
            Assert.Throws<ArgumentException>(() => { var m = Space.Writer(Slot, 4); m.AtomicStore(1UL); }, "no room for 8 bytes");
        }
        Assert.That(U64(ContentsOf(frame), Slot), Is.EqualTo(10UL));
    }

    [TestCase(1UL), TestCase(2UL), TestCase(3UL), TestCase(4UL), TestCase(7UL)]
    public void A_misaligned_atomic_is_InvalidArgs_and_touches_nothing(ulong misalign)
    {
        UFrame frame = MapFilled(Va, 0x11);
        long unresolved = Space.UnresolvedFaults;
        var invalid32 = new IoResult<uint>(0, UVmError.InvalidArgs, null);
        var invalid64 = new IoResult<ulong>(0, UVmError.InvalidArgs, null);
        ulong va = Slot + misalign;
        if (misalign % 4 != 0)
        {
            Assert.That(Space.AtomicLoad32(va), Is.EqualTo(invalid32));
            Assert.That(Space.AtomicStore(va, 1u), Is.EqualTo(invalid32));
            Assert.That(Space.AtomicSwap(va, 1u), Is.EqualTo(invalid32));
            Assert.That(Space.AtomicCompareExchange(va, 0x11111111u, 1u), Is.EqualTo(invalid32));
        }
        Assert.That(Space.AtomicLoad64(va), Is.EqualTo(invalid64));
        Assert.That(Space.AtomicStore(va, 1UL), Is.EqualTo(invalid64));
        Assert.That(Space.AtomicSwap(va, 1UL), Is.EqualTo(invalid64));
        Assert.That(Space.AtomicCompareExchange(va, 0x1111111111111111UL, 1UL), Is.EqualTo(invalid64));
        Assert.That(ContentsOf(frame), Is.All.EqualTo((byte)0x11));
        Assert.That(Space.UnresolvedFaults, Is.EqualTo(unresolved), "not a fault");
    }

    [TestCase(Size), TestCase(Size + 8), TestCase(1UL << 47), TestCase(1UL << 52), TestCase(1UL << 63), TestCase(ulong.MaxValue - 7)]
    public void An_aligned_atomic_outside_the_space_is_an_out_of_range_fault_at_its_address(ulong va)
    {
        var read = Fault(va, PageFaultAccess.Read, PageFaultKind.OutOfRange);
        var write = read with { Access = PageFaultAccess.Write };
        Assert.That(Space.AtomicLoad64(va), Is.EqualTo(new IoResult<ulong>(0, UVmError.PageFault, read)));
        Assert.That(Space.AtomicLoad32(va + 4), Is.EqualTo(new IoResult<uint>(0, UVmError.PageFault, read with { Address = va + 4 })));
        Assert.That(Space.AtomicStore(va, 1UL), Is.EqualTo(new IoResult<ulong>(0, UVmError.PageFault, write)));
        Assert.That(Space.AtomicSwap(va, 1u), Is.EqualTo(new IoResult<uint>(0, UVmError.PageFault, write)));
        Assert.That(Space.AtomicCompareExchange(va, 0UL, 1UL), Is.EqualTo(new IoResult<ulong>(0, UVmError.PageFault, write)));
        Assert.That(Space.AtomicCompareExchange(va, 0u, 1u), Is.EqualTo(new IoResult<uint>(0, UVmError.PageFault, write)));
    }

    [TestCase(0UL), TestCase(Size - 8)]
    public void An_atomic_on_an_unmapped_page_is_not_present_and_maps_nothing(ulong va)
    {
        var write = Fault(va, PageFaultAccess.Write, PageFaultKind.NotPresent);
        Assert.That(Space.AtomicSwap(va, 1UL), Is.EqualTo(new IoResult<ulong>(0, UVmError.PageFault, write)));
        Assert.That(Space.AtomicStore(va, 1u), Is.EqualTo(new IoResult<uint>(0, UVmError.PageFault, write)));
        Assert.That(Space.AtomicLoad64(va), Is.EqualTo(new IoResult<ulong>(0, UVmError.PageFault, write with { Access = PageFaultAccess.Read })));
        Assert.That(GuestMemory.Slots(Space, new VaddrRange(0, Size)), Is.Empty);
    }

    [Test]
    public void A_store_or_swap_on_a_read_only_page_faults_even_with_the_same_value()
    {
        UFrame frame = MapFilled(Va, 0x11, PageFlags.R);
        var fault = Fault(Slot, PageFaultAccess.Write, PageFaultKind.Protection);
        Assert.That(Space.AtomicStore(Slot, 0x11111111u), Is.EqualTo(new IoResult<uint>(0, UVmError.PageFault, fault)));
        Assert.That(Space.AtomicSwap(Slot, 0x1111111111111111UL), Is.EqualTo(new IoResult<ulong>(0, UVmError.PageFault, fault)));
        Assert.That(Space.AtomicCompareExchange(Slot, 0u, 0u), Is.EqualTo(new IoResult<uint>(0, UVmError.PageFault, fault)));
        Assert.That(Space.AtomicLoad64(Slot).Value, Is.EqualTo(0x1111111111111111UL), "it still loads");
        Assert.That(ContentsOf(frame), Is.All.EqualTo((byte)0x11));
    }

    [Test, CancelAfter(60_000)]
    public void Swap_is_atomic_across_threads()
    {
        // Every thread swaps in values of its own; each value must come back out exactly once
        // (from a later swap, or as the final value): a lost or duplicated swap breaks the count.
        UFrame frame = MapFilled(Va, 0);
        const int threads = 4, perThread = 5000;
        var seen = new List<ulong>[threads];
        var workers = TestThread.StartAll(threads, i => $"swapper {i}", t =>
        {
            var mine = new List<ulong>(perThread);
            for (int i = 0; i < perThread; i++)
            {
                ulong token = ((ulong)(t + 1) << 32) | (uint)(i + 1);
                IoResult<ulong> r = Space.AtomicSwap(Slot, token);
                Assert.That(r.IsOk, Is.True);
                mine.Add(r.Value);
            }
            seen[t] = mine;
        });
        TestThread.JoinAll(workers);

        var all = seen.SelectMany(s => s).Append(U64(ContentsOf(frame), Slot)).ToList();
        var expected = Enumerable.Range(0, threads).SelectMany(t => Enumerable.Range(1, perThread).Select(i => ((ulong)(t + 1) << 32) | (uint)i)).Append(0UL);
        Assert.That(all, Is.EquivalentTo(expected));
    }

    [Test, CancelAfter(60_000)]
    public void Compare_exchange_counts_exactly_across_threads_without_activation()
    {
        UFrame frame = MapFilled(Va, 0);
        const int threads = 4, perThread = 2000;
        var workers = TestThread.StartAll(threads, i => $"incrementer {i}", _ =>
        {
            for (int i = 0; i < perThread; i++)
            {
                ulong seen = Space.AtomicLoad64(Slot).Unwrap();
                while (true)
                {
                    ulong observed = Space.AtomicCompareExchange(Slot, seen, seen + 1).Unwrap();
                    if (observed == seen) break;
                    seen = observed;
                }
            }
        });
        TestThread.JoinAll(workers);
        Assert.That(U64(ContentsOf(frame), Slot), Is.EqualTo((ulong)(threads * perThread)));
    }
}
