using Drydock.SiloHost.Cli;

// Composition root: take over SIGINT/SIGTERM (they cancel the command, which cleans up), parse the command line and
// run the chosen command.
using var signals = TerminationSignals.Register(Console.Error);
return await DrydockCli.RunAsync(args, Console.Out, Console.Error, signals.Token);
