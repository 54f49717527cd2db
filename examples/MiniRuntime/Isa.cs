using System.Buffers.Binary;

namespace MiniRuntime;

/// <summary>
/// The instructions of the tiny guest CPU: eight 64-bit registers (r7 is the stack pointer),
/// every instruction 8 bytes: opcode, registers a, b, c, then a 32-bit immediate.
/// </summary>
public enum Op : byte
{
    /// <summary>Ends the run; r0 is its result.</summary>
    Halt,
    /// <summary>a = imm (zero-extended).</summary>
    Li,
    /// <summary>a = b + c.</summary>
    Add,
    /// <summary>a = b + imm (sign-extended).</summary>
    Addi,
    /// <summary>a = b * c.</summary>
    Mul,
    /// <summary>a = b &lt;&lt; imm.</summary>
    Shli,
    /// <summary>a = the 64-bit value at guest address b + imm.</summary>
    Ld,
    /// <summary>The 64-bit value at guest address b + imm = a.</summary>
    St,
    /// <summary>a = the byte at guest address b + imm.</summary>
    Ldb,
    /// <summary>The byte at guest address b + imm = a (its low byte).</summary>
    Stb,
    /// <summary>Jumps to imm when a &lt; b (unsigned).</summary>
    Blt,
    /// <summary>Jumps to imm when a is not 0.</summary>
    Bnz,
    /// <summary>Jumps to imm.</summary>
    Jmp,
    /// <summary>Pushes the address of the next instruction and jumps to imm.</summary>
    Call,
    /// <summary>Pops the address to go on at; 0 ends the run (r0 is its result).</summary>
    Ret,
    /// <summary>Pushes a.</summary>
    Push,
    /// <summary>Pops into a.</summary>
    Pop,
}

/// <summary>An assembler for <see cref="Op"/> with labels; jump targets are absolute guest addresses.</summary>
public sealed class Assembler(ulong origin)
{
    /// <summary>The stack pointer's register.</summary>
    public const int Sp = 7;

    private readonly List<byte> _code = new();
    private readonly Dictionary<string, ulong> _labels = new();
    private readonly List<(int At, string Label)> _fixups = new();

    /// <summary>Appends one instruction.</summary>
    public Assembler I(Op op, int a = 0, int b = 0, int c = 0, int imm = 0)
    {
        Span<byte> insn = stackalloc byte[8];
        insn[0] = (byte)op;
        insn[1] = (byte)a;
        insn[2] = (byte)b;
        insn[3] = (byte)c;
        BinaryPrimitives.WriteInt32LittleEndian(insn[4..], imm);
        _code.AddRange(insn.ToArray());
        return this;
    }

    /// <summary>Appends a jump, branch or call to <paramref name="label"/> (defined before or after).</summary>
    public Assembler To(Op op, string label, int a = 0, int b = 0)
    {
        _fixups.Add((_code.Count + 4, label));
        return I(op, a, b);
    }

    /// <summary>Names the address of the next instruction.</summary>
    public Assembler Label(string name)
    {
        _labels.Add(name, origin + (ulong)_code.Count);
        return this;
    }

    /// <summary>The guest address of <paramref name="label"/>.</summary>
    public ulong this[string label] => _labels[label];

    /// <summary>The code, every label resolved.</summary>
    public byte[] Build()
    {
        byte[] code = _code.ToArray();
        foreach ((int at, string label) in _fixups)
            BinaryPrimitives.WriteUInt32LittleEndian(code.AsSpan(at), checked((uint)_labels[label]));
        return code;
    }
}
