using System.CommandLine;
using System.Security.Authentication;
using Drydock.Hypervisor;
using Drydock.Nbd;
using Drydock.Repository;
using Drydock.Storage;
using Drydock.Transfer;

namespace Drydock.SiloHost.Cli;

/// <summary>Runs a command body and turns failures into one clear line on standard error and an exit code.</summary>
internal static class CommandRunner
{
    /// <summary>Attaches <paramref name="body"/> as the action of <paramref name="command"/>.</summary>
    public static void SetGuardedAction(this Command command, Func<ParseResult, CancellationToken, Task<int>> body)
    {
        command.SetAction(async (parse, cancellationToken) =>
        {
            var error = parse.InvocationConfiguration.Error;
            try
            {
                return await body(parse, cancellationToken);
            }
            catch (JobCancelledException e) when (cancellationToken.IsCancellationRequested)
            {
                // The job cleaned up and says what it left behind.
                await error.WriteLineAsync($"drydock: interrupted; {e.Message}");
                return ExitCodes.Cancelled;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                await error.WriteLineAsync("drydock: interrupted");
                return ExitCodes.Cancelled;
            }
            catch (Exception e) when (IsExpected(e))
            {
                await error.WriteLineAsync($"drydock: error: {ErrorText.Of(e)}");
                return e is NbdUriException or ArgumentException or TransferRequestException ? ExitCodes.Usage : ExitCodes.Failure;
            }
        });
    }

    private static bool IsExpected(Exception e) => e is NbdException
        or NbdUriException
        or IOException
        or UnauthorizedAccessException
        or AuthenticationException
        or NotSupportedException
        or InvalidOperationException
        or ArgumentException
        or TimeoutException
        or TransferException
        or HypervisorException
        or RepositoryException
        or BlobStoreException;
}
