using System.Buffers.Binary;
using UVm;
using UVm.Areas;
using UVm.Faults;
using UVm.Io;

namespace SnapshotFuzz;

/// <summary>
/// Where the toy guest lives in its address space: its byte code (read-only), its input
/// buffer, its heap and its stack, each an area of its own with unmapped guard gaps between.
/// </summary>
public static class GuestLayout
{
    /// <summary>The size of the guest's address space.</summary>
    public const ulong SpaceSize = 64UL << 20;

    /// <summary>The byte code: one read-only page.</summary>
    public const ulong Code = 0x10_0000;

    /// <summary>The input of a run: a 64-bit length, then <see cref="InputBytes"/> bytes.</summary>
    public const ulong Input = 0x20_0000;

    /// <summary>The input bytes the host writes each run (the length says how many the program consumes).</summary>
    public const int InputBytes = 8;

    /// <summary>The heap: <see cref="HeapPages"/> pages, each starting with its tag (<see cref="HeapTag"/>).</summary>
    public const ulong Heap = 0x30_0000;

    /// <summary>Pages of the heap.</summary>
    public const int HeapPages = 16;

    /// <summary>The byte offset, in each heap page, of the program's first counter (the tag comes before it).</summary>
    public const ulong CounterBase = 64;

    /// <summary>The stack: <see cref="StackPages"/> pages, growing down from its end; below it nothing is mapped.</summary>
    public const ulong Stack = 0x40_0000;

    /// <summary>Pages of the stack.</summary>
    public const int StackPages = 4;

    /// <summary>The stack pointer a run starts with (the end of the stack).</summary>
    public const ulong StackTop = Stack + StackPages * Paging.PageSize;

    /// <summary>The tag the heap page <paramref name="page"/> starts with, before any run: "HEAP" and the page's index.</summary>
    public static ulong HeapTag(int page) => 0x5041_4548UL | ((ulong)page << 32);

    /// <summary>
    /// Loads <paramref name="code"/> into a read-only area at <see cref="Code"/> of
    /// <paramref name="space"/>: an image of the bytes in the space's pool, mapped read-only
    /// (nothing written through the space, nothing to protect afterwards). The area keeps the
    /// image's frames; the image itself is needed only for the map.
    /// </summary>
    /// <exception cref="InvalidOperationException">The program does not fit one page.</exception>
    public static void LoadCode(AddressSpace space, byte[] code)
    {
        if ((ulong)code.Length > Paging.PageSize) throw new InvalidOperationException($"the program has {code.Length} bytes; one page holds {Paging.PageSize}");
        using VmImage image = VmImage.FromBytes(code, space.Space.Pool);
        space.Map(Paging.PageSize, new AreaBackend.Image(image, 0), new VmMapOptions { Addr = Code, Flags = PageFlags.R });
    }

    /// <summary>
    /// Builds the guest in <paramref name="space"/> (activated on this thread): the byte code,
    /// the input page, the tagged heap, and the stack, every page resident, so a run's writes
    /// are copies on write of pages the snapshot holds.
    /// </summary>
    public static void Build(AddressSpace space, byte[] code)
    {
        LoadCode(space, code);
        var populated = new AreaBackend.Alloc(Populate: true);
        space.Map(Paging.PageSize, populated, new VmMapOptions { Addr = Input, Flags = PageFlags.RW });
        space.Map(HeapPages * Paging.PageSize, populated, new VmMapOptions { Addr = Heap, Flags = PageFlags.RW });
        for (int p = 0; p < HeapPages; p++)
        {
            VmWriter<Fallible> writer = space.Space.Writer(Heap + (ulong)p * Paging.PageSize, 8);
            IoResult<ulong> r = writer.WriteVal(HeapTag(p));
            if (!r.IsOk) throw new InvalidOperationException($"tagging heap page {p} failed: {r.Error}");
        }
        space.Map(StackPages * Paging.PageSize, new AreaBackend.Alloc(Populate: false), new VmMapOptions { Addr = Stack, Flags = PageFlags.RW });
        space.Prefault(VaddrRange.FromLength(Stack, StackPages * Paging.PageSize), PageFaultAccess.Write);
    }

    /// <summary>
    /// The guest program. For each input byte <c>b</c> it increments the counter
    /// <c>b &gt;&gt; 4</c> of heap page <c>b &amp; 15</c>. Then two planted bugs: when
    /// <c>input[0] &amp; 31 == 31</c> it stores to heap page <c>input[1]</c> (a wild store past the
    /// heap when <c>input[1] &gt;= 16</c>); when <c>input[2] &amp; 63 == 63</c> it stores into its
    /// own (read-only) code.
    /// </summary>
    public static byte[] Program()
    {
        var a = new Assembler(Code);
        a.Push(0);                                                                       // i
        a.Label("loop");
        a.Emit(Op.Dup).Emit(Op.InputLength).Emit(Op.Lt).JumpTo(Op.JumpIfZero, "done");  // while i < length
        a.Emit(Op.Dup).Emit(Op.InputByte);                                               // i b
        a.Emit(Op.Dup).Push(15).Emit(Op.And).Push(12).Emit(Op.Shl);                      // i b page*4096
        a.Emit(Op.Swap).Push(4).Emit(Op.Shr).Push(3).Emit(Op.Shl).Push(CounterBase).Emit(Op.Add); // i page*4096 counter
        a.Emit(Op.Add).Push(Heap).Emit(Op.Add);                                          // i address
        a.Emit(Op.Dup).Emit(Op.Load).Push(1).Emit(Op.Add).Emit(Op.Swap).Emit(Op.Store);  // (*address)++
        a.Push(1).Emit(Op.Add).JumpTo(Op.Jump, "loop");                                  // i + 1
        a.Label("done").Emit(Op.Drop);
        // Bug 1: a store to heap page input[1], unchecked.
        a.Push(0).Emit(Op.InputByte).Push(31).Emit(Op.And).Push(31).Emit(Op.Eq).JumpTo(Op.JumpIfZero, "bug2");
        a.Push(0xBAD).Push(1).Emit(Op.InputByte).Push(12).Emit(Op.Shl).Push(Heap).Emit(Op.Add).Emit(Op.Store);
        // Bug 2: a store into the program itself.
        a.Label("bug2");
        a.Push(2).Emit(Op.InputByte).Push(63).Emit(Op.And).Push(63).Emit(Op.Eq).JumpTo(Op.JumpIfZero, "end");
        a.Push(0xC0DE).Push(Code).Emit(Op.Store);
        a.Label("end").Emit(Op.Halt);
        return a.Build();
    }

    /// <summary>Writes a run's input (its length, then its bytes) into the input page through a fallible writer.</summary>
    /// <exception cref="InvalidOperationException">The write failed (the input page is always writable).</exception>
    public static void WriteInput(AddressSpace space, ReadOnlySpan<byte> bytes, int length)
    {
        var page = new byte[8 + InputBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(page, (ulong)length);
        bytes[..InputBytes].CopyTo(page.AsSpan(8));
        VmWriter<Fallible> writer = space.Space.Writer(Input, (ulong)page.Length);
        CopyResult w = writer.WriteFallible(page);
        if (!w.IsOk) throw new InvalidOperationException($"writing the input failed: {w.Error} {w.Fault}");
    }
}
