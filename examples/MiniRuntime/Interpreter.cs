namespace MiniRuntime;

/// <summary>How a run ended.</summary>
public enum Outcome
{
    /// <summary>The entry returned (or halted); <see cref="RunResult.Value"/> is r0.</summary>
    Returned,
    /// <summary>A guest load or store faulted; <see cref="RunResult.Fault"/> says where and why.</summary>
    Faulted,
    /// <summary>An unknown opcode.</summary>
    BadInstruction,
    /// <summary>The run used up its steps.</summary>
    StepLimit,
}

/// <summary>The end of a run: how, its result, the instruction it ended at, the steps it took, and the fault if one ended it.</summary>
public readonly record struct RunResult(Outcome Outcome, ulong Value, ulong Pc, long Steps, GuestFault? Fault);

/// <summary>
/// The guest CPU. Its registers are host variables; everything else (its instructions, its
/// stack, its heap, its read-only data) is guest memory, reached only through
/// <see cref="Sandbox.Load{T}"/> and <see cref="Sandbox.Store{T}"/>: one call per access, any
/// thread, any address the guest makes up.
/// </summary>
public sealed class Interpreter(Sandbox sandbox, long maxSteps = 100_000_000)
{
    private readonly ulong[] _r = new ulong[8];

    /// <summary>Calls the routine at <paramref name="entry"/> with r0 = <paramref name="argument"/> and a return address of 0.</summary>
    public RunResult Run(ulong entry, ulong argument)
    {
        Array.Clear(_r);
        _r[0] = argument;
        _r[Assembler.Sp] = Sandbox.StackTop;
        ulong pc = entry, at = pc;
        long steps = 0;
        try
        {
            Push(0);
            while (steps < maxSteps)
            {
                at = pc;
                steps++;
                ulong insn = sandbox.Load<ulong>(pc);
                pc += 8;
                int a = (int)(insn >> 8) & 7, b = (int)(insn >> 16) & 7, c = (int)(insn >> 24) & 7;
                int imm = (int)(insn >> 32);
                ulong ea = _r[b] + (ulong)(long)imm;
                switch ((Op)(byte)insn)
                {
                    case Op.Halt: return new RunResult(Outcome.Returned, _r[0], at, steps, null);
                    case Op.Li: _r[a] = (uint)imm; break;
                    case Op.Add: _r[a] = _r[b] + _r[c]; break;
                    case Op.Addi: _r[a] = ea; break;
                    case Op.Mul: _r[a] = _r[b] * _r[c]; break;
                    case Op.Shli: _r[a] = _r[b] << (imm & 63); break;
                    case Op.Ld: _r[a] = sandbox.Load<ulong>(ea); break;
                    case Op.St: sandbox.Store(ea, _r[a]); break;
                    case Op.Ldb: _r[a] = sandbox.Load<byte>(ea); break;
                    case Op.Stb: sandbox.Store(ea, (byte)_r[a]); break;
                    case Op.Blt: if (_r[a] < _r[b]) pc = (uint)imm; break;
                    case Op.Bnz: if (_r[a] != 0) pc = (uint)imm; break;
                    case Op.Jmp: pc = (uint)imm; break;
                    case Op.Call: Push(pc); pc = (uint)imm; break;
                    case Op.Ret:
                        pc = Pop();
                        if (pc == 0) return new RunResult(Outcome.Returned, _r[0], at, steps, null);
                        break;
                    case Op.Push: Push(_r[a]); break;
                    case Op.Pop: _r[a] = Pop(); break;
                    default: return new RunResult(Outcome.BadInstruction, 0, at, steps, null);
                }
            }
            return new RunResult(Outcome.StepLimit, 0, at, steps, null);
        }
        catch (GuestFault fault)
        {
            return new RunResult(Outcome.Faulted, 0, at, steps, fault);
        }
    }

    private void Push(ulong value)
    {
        _r[Assembler.Sp] -= 8;
        sandbox.Store(_r[Assembler.Sp], value);
    }

    private ulong Pop()
    {
        ulong value = sandbox.Load<ulong>(_r[Assembler.Sp]);
        _r[Assembler.Sp] += 8;
        return value;
    }
}
