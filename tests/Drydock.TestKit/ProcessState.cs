namespace Drydock.TestKit;

/// <summary>Whether a process that a fixture did not start itself (a daemon's, or QEMU under libvirtd) still runs.</summary>
public static class ProcessState
{
    /// <summary>
    /// True while <paramref name="pid"/> exists and is not a zombie: a zombie answers <c>kill(pid, 0)</c> but is gone,
    /// waiting only for its parent to reap it.
    /// </summary>
    public static bool IsAlive(int pid)
    {
        if (Interop.NativeMethods.Kill(pid, 0) != 0)
        {
            return false;
        }

        try
        {
            return !File.ReadAllText($"/proc/{pid}/stat").Contains(") Z ", StringComparison.Ordinal);
        }
        catch (IOException)
        {
            // Reaped between the probe and the read.
            return false;
        }
    }
}
