using System.Buffers.Binary;
using System.Text;

namespace MiniRuntime;

/// <summary>The guest program: its image and the entry points of its routines.</summary>
/// <param name="Image">The 1 MiB image the sandbox maps read-only.</param>
/// <param name="CodeBytes">Bytes of code at the start of the image.</param>
/// <param name="Sieve">sieve(n): the primes below n, counted with a byte array in the heap; increments the heap's boot counter.</param>
/// <param name="SumSquares">sumsq(k): the sum of the image table's first k entries.</param>
/// <param name="Triangle">triangle(n): n + triangle(n - 1), recursively.</param>
/// <param name="Peek">peek(address): the 64-bit value at the address.</param>
/// <param name="Fill">fill(address): stores from the address upward, with no end.</param>
public sealed record GuestProgram(byte[] Image, int CodeBytes, ulong Sieve, ulong SumSquares, ulong Triangle, ulong Peek, ulong Fill);

/// <summary>
/// The guest: its program image (code, then a read-only table), the heap header the loader
/// writes, the routines a run may call, and what each routine must return, computed in C#.
/// </summary>
public static class Guest
{
    /// <summary>The guest address of the read-only table in the image: the squares of 0 to <see cref="TableEntries"/> - 1, 64 bits each.</summary>
    public const ulong Table = Sandbox.ImageBase + 0x8_0000;

    /// <summary>Entries of the table (it fills the image to its end).</summary>
    public const int TableEntries = 0x1_0000;

    /// <summary>Heap offset of the boot counter, which sieve (<see cref="GuestProgram.Sieve"/>) increments (0 in the snapshot).</summary>
    public const ulong BootCounter = 8;

    /// <summary>Heap offset of the sieve's byte array (one byte per number, zero in the snapshot).</summary>
    public const int Flags = 0x1000;

    /// <summary>The heap header the loader writes before the snapshot: "MINIHEAP", then the boot counter (0).</summary>
    public static byte[] HeapHeader() => [.. Encoding.ASCII.GetBytes("MINIHEAP"), .. new byte[8]];

    /// <summary>Assembles the routines and returns the 1 MiB image (the code at its start, the table at <see cref="Table"/>) and its entry points.</summary>
    public static GuestProgram Build()
    {
        const int r0 = 0, r1 = 1, r2 = 2, r3 = 3, r4 = 4, r5 = 5, r6 = 6;
        var a = new Assembler(Sandbox.ImageBase);
        // sieve(n): primes below n, marking composites in the heap (which must start zeroed); counts a boot.
        a.Label("sieve").I(Op.Li, r6, imm: (int)Sandbox.HeapBase)
            .I(Op.Ld, r4, r6, imm: (int)BootCounter).I(Op.Addi, r4, r4, imm: 1).I(Op.St, r4, r6, imm: (int)BootCounter)
            .I(Op.Li, r1, imm: 2).I(Op.Li, r2).I(Op.Li, r5, imm: 1)
            .Label("outer").To(Op.Blt, "body", r1, r0).I(Op.Addi, r0, r2).I(Op.Ret)
            .Label("body").I(Op.Add, r3, r6, r1).I(Op.Ldb, r4, r3, imm: Flags).To(Op.Bnz, "next", r4)
            .I(Op.Addi, r2, r2, imm: 1).I(Op.Mul, r3, r1, r1)
            .Label("inner").To(Op.Blt, "mark", r3, r0).To(Op.Jmp, "next")
            .Label("mark").I(Op.Add, r4, r6, r3).I(Op.Stb, r5, r4, imm: Flags).I(Op.Add, r3, r3, r1).To(Op.Jmp, "inner")
            .Label("next").I(Op.Addi, r1, r1, imm: 1).To(Op.Jmp, "outer");
        // sumsq(k): the sum of the table's first k entries (read from the image).
        a.Label("sumsq").I(Op.Li, r1).I(Op.Li, r2).I(Op.Li, r6, imm: (int)Table)
            .Label("sumsq.loop").To(Op.Blt, "sumsq.body", r1, r0).I(Op.Addi, r0, r2).I(Op.Ret)
            .Label("sumsq.body").I(Op.Shli, r3, r1, imm: 3).I(Op.Add, r3, r3, r6).I(Op.Ld, r4, r3)
            .I(Op.Add, r2, r2, r4).I(Op.Addi, r1, r1, imm: 1).To(Op.Jmp, "sumsq.loop");
        // triangle(n) = n + triangle(n - 1), recursively: 16 bytes of stack per level.
        a.Label("triangle").To(Op.Bnz, "triangle.deeper", r0).I(Op.Ret)
            .Label("triangle.deeper").I(Op.Push, r0).I(Op.Addi, r0, r0, imm: -1).To(Op.Call, "triangle")
            .I(Op.Pop, r1).I(Op.Add, r0, r0, r1).I(Op.Ret);
        // peek(address): the 64-bit value there, whatever the address.
        a.Label("peek").I(Op.Ld, r0, r0).I(Op.Ret);
        // fill(address): stores the address at itself and on upward, with no end check.
        a.Label("fill").I(Op.St, r0, r0).I(Op.Addi, r0, r0, imm: 8).To(Op.Jmp, "fill");

        byte[] code = a.Build();
        var image = new byte[Sandbox.ImageSize];
        code.CopyTo(image, 0);
        for (int i = 0; i < TableEntries; i++)
            BinaryPrimitives.WriteUInt64LittleEndian(image.AsSpan((int)(Table - Sandbox.ImageBase) + 8 * i), (ulong)i * (ulong)i);
        return new GuestProgram(image, code.Length, a["sieve"], a["sumsq"], a["triangle"], a["peek"], a["fill"]);
    }

    /// <summary>What sieve(n) returns: the primes below n.</summary>
    public static ulong PrimesBelow(ulong n)
    {
        var composite = new bool[n];
        ulong count = 0;
        for (ulong i = 2; i < n; i++)
        {
            if (composite[i]) continue;
            count++;
            for (ulong j = i * i; j < n; j += i) composite[j] = true;
        }
        return count;
    }

    /// <summary>What sumsq(k) returns: the sum of the squares of 0 to k - 1.</summary>
    public static ulong SumOfSquares(ulong k) => k == 0 ? 0 : (k - 1) * k * (2 * k - 1) / 6;
}
