using System.Diagnostics;
using Drydock.Hypervisor.Libvirt.Interop;

namespace Drydock.Hypervisor.Libvirt;

/// <summary>
/// A writable NBD export of one disk image of a shut-off domain, served by a <c>qemu-nbd</c> child process on a Unix
/// socket. libvirt 9.0 has no writable export API, and QEMU refuses a writable export of a running (or paused)
/// domain's disk node because the guest device does not share write permission (see docs/HYPERVISORS.md), so the
/// driver serves the image itself while the domain is off. Closing sends SIGTERM so that qemu-nbd flushes and exits.
/// </summary>
internal sealed class RestoreExportProcess : IDisposable
{
    private readonly Process _process;

    private RestoreExportProcess(Process process, string target, string socketPath, ulong virtualSize)
    {
        _process = process;
        Target = target;
        SocketPath = socketPath;
        VirtualSize = virtualSize;
    }

    /// <summary>The disk's target name (also the export name).</summary>
    public string Target { get; }

    /// <summary>The Unix socket.</summary>
    public string SocketPath { get; }

    /// <summary>The disk's size.</summary>
    public ulong VirtualSize { get; }

    /// <summary>Starts qemu-nbd and waits until its socket exists (call on a worker thread).</summary>
    /// <exception cref="InvalidOperationException">It exited or did not listen in time; the message has its output.</exception>
    public static RestoreExportProcess Start(string qemuNbd, string imagePath, string format, string target, string socketPath, ulong virtualSize, TimeSpan timeout)
    {
        File.Delete(socketPath);
        var start = new ProcessStartInfo(qemuNbd)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in new[] { "--format", format, "--export-name", target, "--socket", socketPath, "--persistent", "--shared", "8", "--cache", "writeback", "--discard", "unmap", imagePath })
        {
            start.ArgumentList.Add(argument);
        }

        var process = Process.Start(start) ?? throw new InvalidOperationException($"Could not start {qemuNbd}.");
        var deadline = Stopwatch.StartNew();
        while (!File.Exists(socketPath))
        {
            if (process.HasExited || deadline.Elapsed > timeout)
            {
                if (!process.HasExited)
                {
                    process.Kill(entireProcessTree: true);
                }

                process.WaitForExit();
                var error = process.StandardError.ReadToEnd().Trim();
                process.Dispose();
                throw new InvalidOperationException($"qemu-nbd for disk '{target}' ({imagePath}) did not start listening on {socketPath}: {error}");
            }

            Thread.Sleep(20);
        }

        return new RestoreExportProcess(process, target, socketPath, virtualSize);
    }

    /// <summary>Stops qemu-nbd (SIGTERM, then SIGKILL after 30 s) and removes its socket.</summary>
    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _ = LibcNativeMethods.Kill(_process.Id, LibcNativeMethods.SigTerm);
                if (!_process.WaitForExit(TimeSpan.FromSeconds(30)))
                {
                    _process.Kill(entireProcessTree: true);
                    _process.WaitForExit();
                }
            }
        }
        finally
        {
            _process.Dispose();
            File.Delete(SocketPath);
        }
    }
}
