using System.Diagnostics;
using Drydock.Hypervisor.Libvirt.Xml;

namespace Drydock.Hypervisor.Libvirt;

/// <summary>
/// The QEMU command-line tools the driver runs on local images of shut-off domains, where libvirt 9.0 has no API:
/// <c>qemu-img info</c> (bitmap state), <c>qemu-img bitmap --remove</c> (a bitmap libvirt could not delete).
/// Runs synchronously: call on a libvirt worker thread.
/// </summary>
internal sealed class QemuTools(LibvirtDriverOptions options)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    /// <summary>The bitmaps of a closed image.</summary>
    public IReadOnlyList<QemuBitmap> GetBitmaps(string imagePath) =>
        QemuBitmaps.ParseImageInfo(Run(options.QemuImgPath, ["info", "--output=json", "--force-share", "-f", "qcow2", imagePath]));

    /// <summary>Removes a bitmap from a closed image.</summary>
    public void RemoveBitmap(string imagePath, string bitmap) =>
        Run(options.QemuImgPath, ["bitmap", "--remove", "-f", "qcow2", imagePath, bitmap]);

    /// <summary>Waits until no process holds QEMU's write lock on an image (a plain <c>qemu-img info</c> succeeds).</summary>
    /// <exception cref="InvalidOperationException">Still locked after <paramref name="timeout"/>.</exception>
    public void WaitUntilUnlocked(string imagePath, TimeSpan timeout)
    {
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            try
            {
                Run(options.QemuImgPath, ["info", "--output=json", imagePath]);
                return;
            }
            catch (InvalidOperationException) when (waited.Elapsed < timeout)
            {
                Thread.Sleep(20);
            }
        }
    }

    /// <summary>Runs a tool and returns its standard output.</summary>
    /// <exception cref="InvalidOperationException">It failed or timed out; the message has its standard error.</exception>
    public static string Run(string program, IReadOnlyList<string> arguments)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using var process = new Process { StartInfo = start };
        var error = new System.Text.StringBuilder();
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (error)
                {
                    error.AppendLine(e.Data);
                }
            }
        };
        if (!process.Start())
        {
            throw new InvalidOperationException($"Could not start {program}.");
        }

        process.BeginErrorReadLine();
        var stdout = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(Timeout))
        {
            process.Kill(entireProcessTree: true);
            throw new InvalidOperationException($"{program} {string.Join(' ', arguments)} did not finish in {Timeout.TotalSeconds} s.");
        }

        // The parameterless wait also drains the asynchronous stderr reader.
        process.WaitForExit();
        string text;
        lock (error)
        {
            text = error.ToString().Trim();
        }

        return process.ExitCode == 0
            ? stdout
            : throw new InvalidOperationException($"{program} {string.Join(' ', arguments)} failed ({process.ExitCode}): {text}");
    }
}
